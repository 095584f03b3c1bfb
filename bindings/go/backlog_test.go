package tidemark

import (
	"errors"
	"os"
	"testing"
)

// Bounded work per call, proven by counting (WorkStats), never by a clock.

// pinnedHead builds a tracker with call budget `budget` whose head is pinned: writer pin owes
// commit 1, and n later commits (tx 2..n+1), round robin over `others` writers, were each
// flushed at once, so n finished deliveries wait behind the head. Returns the tracker, the
// pinning writer and the last tx.
func pinnedHead(t *testing.T, budget uint64, n, others int) (*Tracker, WriterID, uint64) {
	t.Helper()
	tr := newTracker(t, TrackerOptions{})
	if err := tr.SetCallBudget(budget); err != nil {
		t.Fatal(err)
	}
	pin := register(t, tr, 1)[0]
	ws := register(t, tr, others)
	if err := tr.Commit(Offset{1, 0}, pin); err != nil {
		t.Fatal(err)
	}
	last := uint64(1)
	// Reports go in batches of 64 (one FlushedMany per 64 commits), as a Go host would send them.
	rw := make([]WriterID, 0, 64)
	ro := make([]Offset, 0, 64)
	for i := 0; i < n; i++ {
		last++
		w := ws[i%others]
		if err := tr.Commit(Offset{last, 3}, w); err != nil {
			t.Fatal(err)
		}
		rw, ro = append(rw, w), append(ro, Offset{last, 3})
		if len(rw) == cap(rw) || i == n-1 {
			if _, err := tr.FlushedMany(rw, ro, nil); err != nil {
				t.Fatal(err)
			}
			rw, ro = rw[:0], ro[:0]
		}
	}
	mustAck(t, tr, 0) // pin owes commit 1
	return tr, pin, last
}

func workStats(t *testing.T, tr *Tracker) WorkStats {
	t.Helper()
	w, err := tr.WorkStats()
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// finishBacklog runs the tracker's backlog to the end (as a host's background goroutine
// would), each step within the budget.
func finishBacklog(t *testing.T, tr *Tracker) {
	t.Helper()
	for steps := 0; ; steps++ {
		more, err := tr.RunBacklog()
		if err != nil {
			t.Fatal(err)
		}
		if !more {
			break
		}
		if steps > 1<<20 {
			t.Fatalf("backlog not finished after %d steps", steps)
		}
	}
	w := workStats(t, tr)
	checkBound(t, w, w.Budget)
	if w.Backlog {
		t.Fatalf("backlog left after RunBacklog said none: %+v", w)
	}
}

// checkBound fails unless no call so far examined more than budget deliveries.
func checkBound(t *testing.T, w WorkStats, budget uint64) {
	t.Helper()
	if w.Budget != budget || w.MaxCallWork > budget {
		t.Fatalf("work stats %+v: budget %d, a call examined %d", w, budget, w.MaxCallWork)
	}
}

// A long-pinned head released under a small budget: the releasing call does at most a
// budget's worth, leaves a backlog, the ack is safe meanwhile; RunBacklog finishes it in
// about n/budget steps, each within the budget, and the ack ends exact.
func TestBudgetedReleaseRunBacklog(t *testing.T) {
	const budget = 16
	n := 4000
	if testing.Short() || os.Getenv("TIDEMARK_GO_SMALL") != "" {
		n = 1000
	}
	tr, pin, last := pinnedHead(t, budget, n, 8)
	checkBound(t, workStats(t, tr), budget)
	if has, err := tr.HasBacklog(); err != nil || has {
		t.Fatalf("backlog before the release: %v %v", has, err)
	}

	if err := tr.Flushed(pin, Offset{1, 0}); err != nil {
		t.Fatal(err)
	}
	w := workStats(t, tr)
	checkBound(t, w, budget)
	if !w.Backlog || w.Backlogs == 0 || w.LogLen == 0 {
		t.Fatalf("no backlog after releasing %d deliveries under budget %d: %+v", n, budget, w)
	}
	if has, err := tr.HasBacklog(); err != nil || !has {
		t.Fatalf("HasBacklog = %v, %v", has, err)
	}
	mid, ok := tr.Ack()
	if !ok || mid < 1 || mid >= last {
		t.Fatalf("ack mid-backlog = %d (ok %v): want safe (< %d) and past the released head", mid, ok, last)
	}

	steps, prev := 0, mid
	for more := true; more; steps++ {
		if steps > n { // a step that pops nothing would loop forever
			t.Fatalf("backlog not finished after %d steps", steps)
		}
		var err error
		if more, err = tr.RunBacklog(); err != nil {
			t.Fatal(err)
		}
		checkBound(t, workStats(t, tr), budget)
		a, _ := tr.Ack()
		if a < prev || a > last {
			t.Fatalf("ack %d after step %d: previous %d, exact bound %d", a, steps, prev, last)
		}
		prev = a
	}
	if min := n/budget - 2; steps < min {
		t.Fatalf("backlog of %d deliveries finished in %d steps of budget %d (want ≥ %d)", n, steps, budget, min)
	}
	t.Logf("released %d deliveries: ack %d mid-backlog, exact %d after %d RunBacklog steps", n, mid, last, steps)
	mustAck(t, tr, last)
	w = workStats(t, tr)
	checkBound(t, w, budget)
	if w.Backlog || w.LogLen != 0 || w.DeliveriesPopped < uint64(n) {
		t.Fatalf("after the backlog: %+v", w)
	}
	if has, err := tr.HasBacklog(); err != nil || has {
		t.Fatalf("HasBacklog after the backlog = %v, %v", has, err)
	}
	if more, err := tr.RunBacklog(); err != nil || more { // nothing left: returns at once
		t.Fatalf("RunBacklog with no backlog = %v, %v", more, err)
	}
}

// Ordinary traffic alone (commits and flush reports, no RunBacklog) finishes a backlog,
// every call within the budget, and the ack ends exact.
func TestBudgetedReleaseTrafficFinishesBacklog(t *testing.T) {
	const budget = 8
	n := 2000
	if testing.Short() || os.Getenv("TIDEMARK_GO_SMALL") != "" {
		n = 500
	}
	tr, pin, last := pinnedHead(t, budget, n, 4)
	w := register(t, tr, 1)[0]
	if err := tr.Flushed(pin, Offset{1, 0}); err != nil {
		t.Fatal(err)
	}
	if has, _ := tr.HasBacklog(); !has {
		t.Fatal("no backlog after the release")
	}
	prev, _ := tr.Ack()
	for calls := 0; ; calls += 2 {
		has, err := tr.HasBacklog()
		if err != nil {
			t.Fatal(err)
		}
		if !has {
			break
		}
		if calls > 4*n {
			t.Fatalf("traffic did not finish the backlog in %d calls", calls)
		}
		last++
		if err := tr.Commit(Offset{last, 0}, w); err != nil {
			t.Fatal(err)
		}
		if err := tr.Flushed(w, Offset{last, 0}); err != nil {
			t.Fatal(err)
		}
		checkBound(t, workStats(t, tr), budget)
		a, _ := tr.Ack()
		if a < prev || a > last {
			t.Fatalf("ack %d: previous %d, exact bound %d", a, prev, last)
		}
		prev = a
	}
	t.Logf("traffic finished the backlog; work stats %+v", workStats(t, tr))
	// The backlog is done and nothing is pending: the ack is exact.
	mustAck(t, tr, last)
	checkBound(t, workStats(t, tr), budget)
}

func TestCallBudgetMisuse(t *testing.T) {
	tr := newTracker(t, TrackerOptions{})
	def := workStats(t, tr).Budget
	if def == 0 {
		t.Fatalf("default budget 0")
	}
	if err := tr.SetCallBudget(0); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("SetCallBudget(0): %v", err)
	}
	if b := workStats(t, tr).Budget; b != def { // a refused call changes nothing
		t.Fatalf("budget %d after a refused SetCallBudget(0), want %d", b, def)
	}
	if err := tr.SetCallBudget(1); err != nil {
		t.Fatal(err)
	}
	if b := workStats(t, tr).Budget; b != 1 {
		t.Fatalf("budget %d, want 1", b)
	}
	// A fresh tracker: no work, no backlog.
	if w := workStats(t, tr); w.Backlog || w.LogLen != 0 || w.DeliveriesPopped != 0 || w.Backlogs != 0 {
		t.Fatalf("fresh tracker: %+v", w)
	}
	if more, err := tr.RunBacklog(); err != nil || more {
		t.Fatalf("RunBacklog on a fresh tracker: %v %v", more, err)
	}

	tr.Close()
	if _, err := tr.WorkStats(); !errors.Is(err, ErrClosed) {
		t.Errorf("WorkStats after Close: %v", err)
	}
	if err := tr.SetCallBudget(4); !errors.Is(err, ErrClosed) {
		t.Errorf("SetCallBudget after Close: %v", err)
	}
	if err := tr.SetCallBudget(0); !errors.Is(err, ErrClosed) {
		t.Errorf("SetCallBudget(0) after Close: %v", err)
	}
	if more, err := tr.RunBacklog(); !errors.Is(err, ErrClosed) || more {
		t.Errorf("RunBacklog after Close: %v %v", more, err)
	}
	if has, err := tr.HasBacklog(); !errors.Is(err, ErrClosed) || has {
		t.Errorf("HasBacklog after Close: %v %v", has, err)
	}
	var nilTracker *Tracker
	if _, err := nilTracker.RunBacklog(); !errors.Is(err, ErrClosed) {
		t.Errorf("nil tracker: %v", err)
	}
}
