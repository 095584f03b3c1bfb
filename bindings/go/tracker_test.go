package tidemark

import (
	"context"
	"errors"
	"math/rand"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newTracker(t testing.TB, opts TrackerOptions) *Tracker {
	t.Helper()
	tr, err := NewTracker(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func register(t testing.TB, tr *Tracker, n int) []WriterID {
	t.Helper()
	ws := make([]WriterID, n)
	for i := range ws {
		w, err := tr.Register()
		if err != nil {
			t.Fatal(err)
		}
		ws[i] = w
	}
	return ws
}

func mustAck(t testing.TB, tr *Tracker, want uint64) {
	t.Helper()
	got, ok := tr.Ack()
	if !ok || got != want {
		t.Fatalf("ack = %d (ok %v), want %d", got, ok, want)
	}
}

func takeAll(t testing.TB, tr *Tracker) []Event {
	t.Helper()
	buf := make([]Event, 16)
	var out []Event
	for {
		n, err := tr.TakeEvents(buf)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, buf[:n]...)
		if n < len(buf) {
			return out
		}
	}
}

func TestTrackerBasics(t *testing.T) {
	tr := newTracker(t, TrackerOptions{})
	if _, ok := tr.Ack(); ok {
		t.Fatal("ack before the first commit")
	}
	ws := register(t, tr, 2)
	a, b := ws[0], ws[1]
	if err := tr.Commit(Offset{10, 3}, a, b); err != nil {
		t.Fatal(err)
	}
	mustAck(t, tr, 9)
	if err := tr.Flushed(b, Offset{10, 3}); err != nil {
		t.Fatal(err)
	}
	mustAck(t, tr, 9) // a still owes commit 10
	p, ok, err := tr.Pinning()
	if err != nil || !ok || p.Writer != a || p.Owes != (Offset{10, 3}) {
		t.Fatalf("pinning %+v %v %v", p, ok, err)
	}
	if err := tr.Flushed(a, Offset{10, 3}); err != nil {
		t.Fatal(err)
	}
	mustAck(t, tr, 10)
	if _, ok, _ := tr.Pinning(); ok {
		t.Fatal("something pins with nothing pending")
	}
	// Commit with no writers while nothing is pending: the ack moves at once.
	if err := tr.Commit(Offset{11, 0}); err != nil {
		t.Fatal(err)
	}
	mustAck(t, tr, 11)
	// Many writers (the slice path of Commit).
	many := register(t, tr, 12)
	if err := tr.Commit(Offset{12, 1}, many...); err != nil {
		t.Fatal(err)
	}
	offs := make([]Offset, len(many))
	for i := range offs {
		offs[i] = Offset{12, 1}
	}
	statuses := make([]Status, len(many))
	if failed, err := tr.FlushedMany(many, offs, statuses); err != nil || failed != 0 {
		t.Fatalf("FlushedMany: %d %v %v", failed, err, statuses)
	}
	mustAck(t, tr, 12)
	st, err := tr.Stats()
	if err != nil || st.Commits != 3 || st.Pending != 0 || st.Registered != 14 || !st.HasAck || st.Ack != 12 {
		t.Fatalf("stats %+v %v", st, err)
	}
	ls, ok, err := tr.LastSeen()
	if err != nil || !ok || ls != (Offset{12, 1}) {
		t.Fatalf("last seen %v %v %v", ls, ok, err)
	}
}

func TestInitialAckAndWaitAck(t *testing.T) {
	tr := newTracker(t, TrackerOptions{InitialAck: 100, HasInitialAck: true})
	mustAck(t, tr, 100)
	w := register(t, tr, 1)[0]
	if err := tr.Commit(Offset{100, 0}, w); !errors.Is(err, ErrOffsetRegressed) {
		t.Fatalf("commit at the initial ack: %v", err)
	}
	if err := tr.Commit(Offset{105, 2}, w); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	mustAck(t, tr, 104) // w owes commit 105
	if _, err := tr.WaitAck(ctx, 104); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitAck with nothing flushed: %v", err)
	}
	cancel()
	go func() {
		time.Sleep(10 * time.Millisecond)
		tr.Flushed(w, Offset{105, 2})
	}()
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := tr.WaitAck(ctx, 104)
	if err != nil || got != 105 {
		t.Fatalf("WaitAck = %d, %v", got, err)
	}
	g, err := tr.AckGeneration()
	if err != nil || g == 0 {
		t.Fatalf("generation %d %v", g, err)
	}
}

// A writer killed without cleanup: reported down (teardown: the process is gone), it keeps
// pinning until a sweep past the grace period evicts it; the ack then advances and the
// eviction is reported. A crash evicts at once.
func TestKilledWriterIsEvictedBySweep(t *testing.T) {
	const grace = 40 * time.Millisecond
	tr := newTracker(t, TrackerOptions{StallGrace: grace})
	ws := register(t, tr, 3)
	a, b, c := ws[0], ws[1], ws[2]
	if err := tr.Commit(Offset{10, 0}, a, b); err != nil {
		t.Fatal(err)
	}
	if err := tr.Commit(Offset{11, 0}, c); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flushed(b, Offset{10, 0}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flushed(c, Offset{11, 0}); err != nil {
		t.Fatal(err)
	}
	mustAck(t, tr, 9) // a pins commit 10
	if err := tr.Down(a, DownTeardown); err != nil {
		t.Fatal(err)
	}
	if out, err := tr.Sweep(); err != nil || out.Evicted != 0 {
		t.Fatalf("sweep inside the grace period: %+v %v", out, err)
	}
	mustAck(t, tr, 9)
	if p, ok, _ := tr.Pinning(); !ok || p.Writer != a || !p.Orphaned {
		t.Fatalf("pinning %+v", p)
	}
	time.Sleep(grace + 20*time.Millisecond)
	out, err := tr.Sweep()
	if err != nil || out.Evicted != 1 {
		t.Fatalf("sweep past the grace period: %+v %v", out, err)
	}
	mustAck(t, tr, 11)
	ev := takeAll(t, tr)
	if len(ev) != 1 || ev[0] != (Event{Kind: EventEvicted, Reason: EvictOrphaned, Writer: a}) {
		t.Fatalf("events %+v", ev)
	}
	if err := tr.Flushed(a, Offset{10, 0}); !errors.Is(err, ErrEvicted) {
		t.Fatalf("report from an evicted writer: %v", err)
	}
	if st, reason, err := tr.WriterState(a); err != nil || st != WriterEvicted || reason != EvictOrphaned {
		t.Fatalf("state %v %v %v", st, reason, err)
	}

	// Crash: evicted at once, no sweep needed.
	if err := tr.Commit(Offset{12, 0}, b); err != nil {
		t.Fatal(err)
	}
	mustAck(t, tr, 11)
	if err := tr.Down(b, DownCrash); err != nil {
		t.Fatal(err)
	}
	mustAck(t, tr, 12)
	ev = takeAll(t, tr)
	if len(ev) != 1 || ev[0] != (Event{Kind: EventEvicted, Reason: EvictCrashed, Writer: b}) {
		t.Fatalf("events %+v", ev)
	}
	// Unregister frees the slot; the id is stale from then on.
	if err := tr.Unregister(b); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flushed(b, Offset{12, 0}); !errors.Is(err, ErrUnknownWriter) {
		t.Fatalf("stale id: %v", err)
	}
}

// A wedged writer (alive, no progress) is challenged by one sweep and evicted by the next;
// one that answers the challenge (Touch) is not; a paused one is never challenged.
func TestWedgedWriterChallengedThenEvicted(t *testing.T) {
	const grace = 30 * time.Millisecond
	tr := newTracker(t, TrackerOptions{StallGrace: grace})
	ws := register(t, tr, 3)
	wedged, answers, paused := ws[0], ws[1], ws[2]
	if err := tr.Commit(Offset{5, 0}, wedged, answers, paused); err != nil {
		t.Fatal(err)
	}
	if err := tr.Pause(paused); err != nil {
		t.Fatal(err)
	}
	time.Sleep(grace + 20*time.Millisecond)
	out, err := tr.Sweep()
	if err != nil || out.Challenged != 2 || out.Evicted != 0 {
		t.Fatalf("first sweep %+v %v", out, err)
	}
	ev := takeAll(t, tr)
	if len(ev) != 2 || ev[0].Kind != EventChallenged || ev[1].Kind != EventChallenged {
		t.Fatalf("events %+v", ev)
	}
	if err := tr.Touch(answers); err != nil {
		t.Fatal(err)
	}
	out, err = tr.Sweep()
	if err != nil || out.Evicted != 1 {
		t.Fatalf("second sweep %+v %v", out, err)
	}
	ev = takeAll(t, tr)
	if len(ev) != 1 || ev[0] != (Event{Kind: EventEvicted, Reason: EvictStalled, Writer: wedged}) {
		t.Fatalf("events %+v", ev)
	}
	mustAck(t, tr, 4) // answers and paused still owe commit 5
	if err := tr.Resume(paused); err != nil {
		t.Fatal(err)
	}
	tr.Flushed(answers, Offset{5, 0})
	tr.Flushed(paused, Offset{5, 0})
	mustAck(t, tr, 5)
	st, _ := tr.Stats()
	if st.EvictedStalled != 1 || st.Challenges != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestWatchEvents(t *testing.T) {
	tr := newTracker(t, TrackerOptions{StallGrace: 20 * time.Millisecond})
	ws := register(t, tr, 2)
	if err := tr.Commit(Offset{1, 0}, ws...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch := tr.WatchEvents(ctx, WatchOptions{Every: 5 * time.Millisecond, Sweep: true})
	if err := tr.Down(ws[1], DownCleanup); err != nil {
		t.Fatal(err)
	}
	want := []Event{
		{Kind: EventRemoved, Writer: ws[1]},
		{Kind: EventChallenged, Writer: ws[0]},
		{Kind: EventEvicted, Reason: EvictStalled, Writer: ws[0]},
	}
	timeout := time.After(10 * time.Second)
	for i, w := range want {
		select {
		case e := <-ch:
			if e != w {
				t.Fatalf("event %d = %+v, want %+v", i, e, w)
			}
		case <-timeout:
			t.Fatalf("event %d never came", i)
		}
	}
	mustAck(t, tr, 1)
	tr.Close()
	for range ch { // closed once the tracker is
	}
}

// Many goroutines report flushes (Flushed and FlushedMany, partial and complete, out of order
// across writers) while one goroutine commits and another reads the ack. Checked against an
// independent model: every ack read is at most the exact value implied by the reports that
// had started before it (safety) and never moves backwards; at quiescent checkpoints and at
// the end the ack equals the model exactly.
func TestConcurrentFlushersAgainstModel(t *testing.T) {
	const (
		flushers    = 4
		perFlusher  = 8
		writers     = flushers * perFlusher
		checkpoints = 10
	)
	commits := 20_000
	if testing.Short() || os.Getenv("TIDEMARK_GO_SMALL") != "" {
		commits = 4_000
	}
	tr := newTracker(t, TrackerOptions{})
	ws := register(t, tr, writers)
	index := map[WriterID]int{}
	for i, w := range ws {
		index[w] = i
	}

	// The model: the commit log (published before each Commit call) and each writer's highest
	// report (published before each report call).
	type commit struct {
		off     Offset
		writers []int
	}
	var logMu sync.Mutex
	var log []commit
	intent := make([]atomic.Uint64, writers) // packed: tx<<8 | op (op < 256)
	pack := func(o Offset) uint64 { return o.Tx<<8 | o.Op }
	done := func(c commit) bool {
		for _, w := range c.writers {
			if intent[w].Load() < pack(c.off) {
				return false
			}
		}
		return true
	}
	exact := func(lo *int) (uint64, bool) { // earliest commit some writer has not flushed
		logMu.Lock()
		defer logMu.Unlock()
		for *lo < len(log) && done(log[*lo]) {
			*lo++
		}
		if len(log) == 0 {
			return 0, false
		}
		if *lo < len(log) {
			return log[*lo].off.Tx - 1, true
		}
		return log[len(log)-1].off.Tx, true
	}

	type delivery struct {
		w   int
		off Offset
	}
	inbox := make([]chan delivery, flushers)
	for i := range inbox {
		inbox[i] = make(chan delivery, 1024)
	}
	barrier := make(chan chan struct{})
	var flushErr atomic.Value
	var wg sync.WaitGroup
	for f := 0; f < flushers; f++ {
		wg.Add(1)
		go func(f int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(f)))
			held := map[int][]Offset{} // per writer, deliveries not yet reported, in order
			report := func(flushAll bool) {
				var bw []WriterID
				var bo []Offset
				for w, offs := range held {
					if len(offs) == 0 {
						continue
					}
					k := len(offs)
					if !flushAll {
						k = rng.Intn(len(offs) + 1)
					}
					if k == 0 {
						continue
					}
					off := offs[k-1]
					held[w] = offs[k:]
					if !flushAll && k < len(offs) && off.Op > 0 && rng.Intn(4) == 0 {
						off.Op-- // a partial report: flushed everything before this commit
						held[w] = offs[k-1:]
					}
					if pack(off) > intent[w].Load() {
						intent[w].Store(pack(off))
					}
					bw = append(bw, ws[w])
					bo = append(bo, off)
				}
				if len(bw) == 0 {
					return
				}
				if rng.Intn(2) == 0 {
					if failed, err := tr.FlushedMany(bw, bo, nil); err != nil || failed != 0 {
						flushErr.Store(err)
					}
				} else {
					for i := range bw {
						if err := tr.Flushed(bw[i], bo[i]); err != nil {
							flushErr.Store(err)
						}
					}
				}
			}
			for {
				select {
				case d, ok := <-inbox[f]:
					if !ok {
						report(true)
						return
					}
					held[d.w] = append(held[d.w], d.off)
					if rng.Intn(8) == 0 {
						report(false)
					}
				case ack := <-barrier:
					// Quiescence: drain the inbox first (the committer has stopped).
					for drained := false; !drained; {
						select {
						case d := <-inbox[f]:
							held[d.w] = append(held[d.w], d.off)
						default:
							drained = true
						}
					}
					report(false)
					ack <- struct{}{}
				}
			}
		}(f)
	}

	// The reader: safety and monotonicity under concurrency.
	stopReader := make(chan struct{})
	var readerErr atomic.Value
	var reads atomic.Int64
	var readerWG sync.WaitGroup
	readerWG.Add(1)
	go func() {
		defer readerWG.Done()
		lo := 0
		var last uint64
		for {
			select {
			case <-stopReader:
				return
			default:
			}
			a, ok := tr.Ack()
			bound, bok := exact(&lo)
			reads.Add(1)
			if !ok {
				continue
			}
			if !bok || a > bound {
				readerErr.Store(errors.New("ack above the exact value"))
				t.Errorf("ack %d above the exact bound %d (%v)", a, bound, bok)
				return
			}
			if a < last {
				t.Errorf("ack moved backwards: %d after %d", a, last)
				return
			}
			last = a
		}
	}()

	rng := rand.New(rand.NewSource(99))
	tx := uint64(0)
	checkLo := 0
	for i := 1; i <= commits; i++ {
		tx += uint64(1 + rng.Intn(3))
		k := rng.Intn(4) // 0..3 writers; 0 is a commit nobody owes
		pick := rng.Perm(writers)[:k]
		c := commit{off: Offset{tx, uint64(rng.Intn(5))}, writers: pick}
		logMu.Lock()
		log = append(log, c)
		logMu.Unlock()
		cw := make([]WriterID, k)
		for j, w := range pick {
			cw[j] = ws[w]
		}
		if err := tr.Commit(c.off, cw...); err != nil {
			t.Fatal(err)
		}
		for _, w := range pick {
			inbox[w/perFlusher] <- delivery{w, c.off}
		}
		if i%(commits/checkpoints) == 0 {
			acks := make(chan struct{})
			for f := 0; f < flushers; f++ {
				barrier <- acks
			}
			for f := 0; f < flushers; f++ {
				<-acks
			}
			want, _ := exact(&checkLo)
			// Quiescent, but a flusher that lagged may have left more than a call's budget
			// behind a released head: the ack is exact once that backlog is done.
			finishBacklog(t, tr)
			mustAck(t, tr, want)
		}
	}
	for _, ch := range inbox {
		close(ch)
	}
	wg.Wait()
	close(stopReader)
	readerWG.Wait()
	if e := flushErr.Load(); e != nil {
		t.Fatalf("a flush report failed: %v", e)
	}
	if readerErr.Load() != nil {
		t.FailNow()
	}
	finishBacklog(t, tr)
	mustAck(t, tr, tx) // liveness: everything reported, the backlog done
	st, _ := tr.Stats()
	if st.Pending != 0 || st.Commits != uint64(commits) {
		t.Fatalf("stats %+v", st)
	}
	t.Logf("%d commits, %d ack reads checked", commits, reads.Load())
}
