package tidemark

import (
	"errors"
	"math"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a TrackerOptions.Now that moves only when told to.
type fakeClock struct{ ms atomic.Uint64 }

func newFakeClock(start uint64) *fakeClock {
	c := &fakeClock{}
	c.ms.Store(start)
	return c
}

func (c *fakeClock) Now() uint64                { return c.ms.Load() }
func (c *fakeClock) Advance(d time.Duration)    { c.ms.Add(uint64(d / time.Millisecond)) }
func (c *fakeClock) AdvanceMs(ms uint64) uint64 { return c.ms.Add(ms) }

// With an injected clock, staleness runs on it alone: a grace period of an hour passes in one
// Advance, no sleeping. A wedged writer is challenged by the first sweep past the grace and
// evicted by the next; one that answers (Touch) is not; a paused one is never challenged; the
// reported time since progress is the fake clock's.
func TestFakeClockEvictsWedgedWriter(t *testing.T) {
	const grace = time.Hour
	clk := newFakeClock(1_000_000)
	tr := newTracker(t, TrackerOptions{StallGrace: grace, Now: clk.Now})
	ws := register(t, tr, 3)
	wedged, answers, paused := ws[0], ws[1], ws[2]
	if err := tr.Commit(Offset{5, 0}, wedged, answers, paused); err != nil {
		t.Fatal(err)
	}
	if err := tr.Pause(paused); err != nil {
		t.Fatal(err)
	}
	// Exactly the grace period: not past it yet.
	clk.Advance(grace)
	if out, err := tr.Sweep(); err != nil || out != (SweepOutcome{}) {
		t.Fatalf("sweep at the grace period: %+v %v", out, err)
	}
	p, ok, err := tr.Pinning()
	if err != nil || !ok || p.SinceProgress != grace {
		t.Fatalf("pinning %+v %v %v (want %v since progress)", p, ok, err, grace)
	}
	clk.AdvanceMs(1)
	out, err := tr.Sweep()
	if err != nil || out.Challenged != 2 || out.Evicted != 0 {
		t.Fatalf("first sweep past the grace period: %+v %v", out, err)
	}
	ev := takeAll(t, tr)
	if len(ev) != 2 || ev[0].Kind != EventChallenged || ev[1].Kind != EventChallenged {
		t.Fatalf("events %+v", ev)
	}
	if err := tr.Touch(answers); err != nil {
		t.Fatal(err)
	}
	out, err = tr.Sweep()
	if err != nil || out.Evicted != 1 || out.Challenged != 0 {
		t.Fatalf("second sweep %+v %v", out, err)
	}
	ev = takeAll(t, tr)
	if len(ev) != 1 || ev[0] != (Event{Kind: EventEvicted, Reason: EvictStalled, Writer: wedged}) {
		t.Fatalf("events %+v", ev)
	}
	if st, reason, err := tr.WriterState(wedged); err != nil || st != WriterEvicted || reason != EvictStalled {
		t.Fatalf("wedged writer: %v %v %v", st, reason, err)
	}
	if err := tr.Flushed(wedged, Offset{5, 0}); !errors.Is(err, ErrEvicted) {
		t.Fatalf("report from the evicted writer: %v", err)
	}
	mustAck(t, tr, 4) // answers and paused still owe commit 5
	// The touched writer's grace restarted at the touch: challenged again only past it.
	clk.Advance(grace)
	if out, err := tr.Sweep(); err != nil || out != (SweepOutcome{}) {
		t.Fatalf("sweep a grace period after the touch: %+v %v", out, err)
	}
	clk.AdvanceMs(1)
	if out, err := tr.Sweep(); err != nil || out.Challenged != 1 {
		t.Fatalf("sweep past it: %+v %v", out, err)
	}
	if err := tr.Resume(paused); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flushed(answers, Offset{5, 0}); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flushed(paused, Offset{5, 0}); err != nil {
		t.Fatal(err)
	}
	mustAck(t, tr, 5)
	st, err := tr.Stats()
	if err != nil || st.EvictedStalled != 1 || st.Challenges != 3 {
		t.Fatalf("stats %+v %v", st, err)
	}
}

// An orphan (Down with DownTeardown) is evicted by the first sweep past the grace period on
// the injected clock; every call path that takes a time (FlushedMany, Down) reads it.
func TestFakeClockEvictsOrphan(t *testing.T) {
	const grace = 30 * time.Second
	clk := newFakeClock(5)
	tr := newTracker(t, TrackerOptions{StallGrace: grace, Now: clk.Now})
	ws := register(t, tr, 2)
	a, b := ws[0], ws[1]
	if err := tr.Commit(Offset{10, 0}, a, b); err != nil {
		t.Fatal(err)
	}
	// Progress from b a little later, through the batch path.
	clk.Advance(10 * time.Second)
	if failed, err := tr.FlushedMany([]WriterID{b}, []Offset{{10, 0}}, nil); err != nil || failed != 0 {
		t.Fatalf("FlushedMany: %d %v", failed, err)
	}
	if err := tr.Down(a, DownTeardown); err != nil {
		t.Fatal(err)
	}
	clk.Advance(grace - 10*time.Second)
	if out, err := tr.Sweep(); err != nil || out.Evicted != 0 {
		t.Fatalf("sweep at the grace period: %+v %v", out, err)
	}
	mustAck(t, tr, 9)
	clk.AdvanceMs(1)
	if out, err := tr.Sweep(); err != nil || out.Evicted != 1 || out.Challenged != 0 {
		t.Fatalf("sweep past the grace period: %+v %v", out, err)
	}
	mustAck(t, tr, 10)
	if ev := takeAll(t, tr); len(ev) != 1 || ev[0] != (Event{Kind: EventEvicted, Reason: EvictOrphaned, Writer: a}) {
		t.Fatalf("events %+v", ev)
	}
}

// The clock value the shim reserves for "read the library clock" is never passed through as
// a time: a Now returning it is read one millisecond earlier.
func TestFakeClockReservedValue(t *testing.T) {
	tr := newTracker(t, TrackerOptions{StallGrace: time.Second, Now: func() uint64 { return math.MaxUint64 }})
	if got := uint64(tr.clock()); got != math.MaxUint64-1 {
		t.Fatalf("clock() = %d", got)
	}
	plain := newTracker(t, TrackerOptions{})
	if got := uint64(plain.clock()); got != math.MaxUint64 {
		t.Fatalf("library clock marker = %d", got)
	}
}
