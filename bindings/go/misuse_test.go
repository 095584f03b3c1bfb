package tidemark

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"
)

func TestClosedTrackerIsErrClosed(t *testing.T) {
	tr, err := NewTracker(TrackerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, _ := tr.Register()
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
	checks := map[string]error{
		"Commit":  tr.Commit(Offset{1, 0}, w),
		"Flushed": tr.Flushed(w, Offset{1, 0}),
		"Remove":  tr.Remove(w),
		"Down":    tr.Down(w, DownCrash),
		"Touch":   tr.Touch(w),
		"Pause":   tr.Pause(w),
		"Resume":  tr.Resume(w),
	}
	_, checks["Register"] = tr.Register()
	_, checks["FlushedMany"] = tr.FlushedMany([]WriterID{w}, []Offset{{1, 0}}, nil)
	_, checks["Sweep"] = tr.Sweep()
	_, checks["TakeEvents"] = tr.TakeEvents(make([]Event, 1))
	_, _, checks["Pinning"] = tr.Pinning()
	_, checks["Stats"] = tr.Stats()
	_, checks["WaitAck"] = tr.WaitAck(context.Background(), 0)
	_, checks["WorkStats"] = tr.WorkStats()
	checks["SetCallBudget"] = tr.SetCallBudget(64)
	_, checks["RunBacklog"] = tr.RunBacklog()
	_, checks["HasBacklog"] = tr.HasBacklog()
	for name, err := range checks {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("%s after Close: %v", name, err)
		}
	}
	if _, ok := tr.Ack(); ok {
		t.Error("Ack after Close")
	}
	var nilTracker *Tracker
	if err := nilTracker.Flushed(w, Offset{}); !errors.Is(err, ErrClosed) {
		t.Errorf("nil tracker: %v", err)
	}
}

func TestClosedBatchBufferIsErrClosed(t *testing.T) {
	b, err := NewBatchBuffer(BatchConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	m := Message{Payload: []byte("x")}
	err = b.TryPush(m)
	var pe *PushError
	if !errors.Is(err, ErrClosed) || !errors.As(err, &pe) || string(pe.Message.Payload) != "x" {
		t.Errorf("TryPush after Close: %v", err)
	}
	if _, err := b.PushMany([]Message{m}); !errors.Is(err, ErrClosed) {
		t.Errorf("PushMany after Close: %v", err)
	}
	if _, err := b.NextBatch(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("NextBatch after Close: %v", err)
	}
	if err := b.Flush(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Flush after Close: %v", err)
	}
	if _, err := b.Stats(); !errors.Is(err, ErrClosed) {
		t.Errorf("Stats after Close: %v", err)
	}
	if r, err := b.Stop(context.Background()); !errors.Is(err, ErrClosed) || r == nil {
		t.Errorf("Stop after Close: %v %v (want the report Close kept, and ErrClosed)", r, err)
	}
}

// Close racing with calls in flight: no crash, every call either works or says ErrClosed.
func TestCloseRacesCalls(t *testing.T) {
	for round := 0; round < 20; round++ {
		tr, _ := NewTracker(TrackerOptions{})
		w, _ := tr.Register()
		tr.Commit(Offset{1, 1 << 40}, w)
		b, _ := NewBatchBuffer(BatchConfig{Linger: time.Millisecond})
		var wg sync.WaitGroup
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := uint64(1); ; i++ {
					err1 := tr.Flushed(w, Offset{1, i})
					err2 := b.TryPush(Message{Payload: []byte("abc")})
					if err1 != nil && !errors.Is(err1, ErrClosed) {
						t.Errorf("Flushed: %v", err1)
					}
					if err2 != nil && !errors.Is(err2, ErrClosed) && !errors.Is(err2, ErrStopping) && !errors.Is(err2, ErrFull) {
						t.Errorf("TryPush: %v", err2)
					}
					if errors.Is(err1, ErrClosed) && errors.Is(err2, ErrClosed) {
						return
					}
				}
			}(g)
		}
		wg.Add(1)
		go func() { // a sink
			defer wg.Done()
			for {
				bt, err := b.NextBatch(context.Background())
				if err != nil {
					return
				}
				b.Ack(bt)
			}
		}()
		time.Sleep(time.Millisecond)
		tr.Close()
		b.Stop(context.Background())
		b.Close()
		wg.Wait()
	}
}

func TestCloseWithoutStopHandsBack(t *testing.T) {
	b, err := NewBatchBuffer(BatchConfig{Linger: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	b.TryPush(Message{Payload: []byte("one")})
	b.TryPush(Message{Payload: []byte("two")})
	err = b.Close()
	var ns *NotStoppedError
	if !errors.Is(err, ErrNotStopped) || !errors.As(err, &ns) || len(ns.Report.HandedBack) != 2 || string(ns.Report.HandedBack[1].Payload) != "two" {
		t.Fatalf("Close without Stop: %v", err)
	}
	// An empty buffer closed without Stop loses nothing: no error.
	b2, _ := NewBatchBuffer(BatchConfig{})
	if err := b2.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestStaleAndForeignWriterIDs(t *testing.T) {
	tr := newTracker(t, TrackerOptions{})
	w := register(t, tr, 1)[0]
	if err := tr.Unregister(w); err != nil {
		t.Fatal(err)
	}
	w2 := register(t, tr, 1)[0] // reuses the slot, new generation
	if w2 == w {
		t.Fatal("stale id reissued")
	}
	for name, err := range map[string]error{
		"Flushed": tr.Flushed(w, Offset{1, 0}),
		"Commit":  tr.Commit(Offset{1, 0}, w),
		"Touch":   tr.Touch(w),
		"Down":    tr.Down(w, DownCrash),
		"never":   tr.Flushed(WriterID(12345)<<32|77, Offset{1, 0}),
	} {
		if !errors.Is(err, ErrUnknownWriter) {
			t.Errorf("%s with a stale id: %v", name, err)
		}
	}
	if err := tr.Down(w2, DownClass(99)); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("bad down class: %v", err)
	}
	// A refused commit changes nothing; the next valid one works.
	if err := tr.Commit(Offset{1, 0}, w2); err != nil {
		t.Fatal(err)
	}
	// FlushedMany reports per item.
	statuses := make([]Status, 2)
	failed, err := tr.FlushedMany([]WriterID{w, w2}, []Offset{{1, 0}, {1, 0}}, statuses)
	if err != nil || failed != 1 || statuses[0] != StatusUnknownWriter || statuses[1] != StatusOK {
		t.Fatalf("FlushedMany: %d %v %v", failed, err, statuses)
	}
	failed, err = tr.FlushedMany([]WriterID{w2, w}, []Offset{{1, 0}, {1, 0}}, nil)
	var ie *ItemError
	if failed != 1 || !errors.Is(err, ErrUnknownWriter) || !errors.As(err, &ie) || ie.Index != 1 {
		t.Fatalf("FlushedMany without statuses: %d %v", failed, err)
	}
}

func TestRegressedOffsets(t *testing.T) {
	tr := newTracker(t, TrackerOptions{})
	w := register(t, tr, 1)[0]
	if err := tr.Commit(Offset{10, 5}, w); err != nil {
		t.Fatal(err)
	}
	for _, o := range []Offset{{10, 6}, {9, 0}, {10, 5}} {
		if err := tr.Commit(o); !errors.Is(err, ErrOffsetRegressed) {
			t.Errorf("commit %v after 10/5: %v", o, err)
		}
	}
	if err := tr.Commit(Offset{20, 0}, w); err != nil {
		t.Fatal(err)
	}
	if err := tr.Flushed(w, Offset{15, 0}); err != nil {
		t.Fatal(err)
	}
	mustAck(t, tr, 19)
	// A flush report below an earlier one is accepted and moves nothing backwards.
	if err := tr.Flushed(w, Offset{5, 0}); err != nil {
		t.Fatalf("regressed flush report: %v", err)
	}
	mustAck(t, tr, 19)
	if p, _, _ := tr.Pinning(); p.Flushed != (Offset{15, 0}) {
		t.Fatalf("pinning after a regressed report: %+v", p)
	}
}

func TestEmptyAndMismatchedBatches(t *testing.T) {
	tr := newTracker(t, TrackerOptions{})
	w := register(t, tr, 1)[0]
	if _, err := tr.FlushedMany(nil, nil, nil); !errors.Is(err, ErrEmptyBatch) || !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("FlushedMany(nil): %v", err)
	}
	if _, err := tr.FlushedMany([]WriterID{}, []Offset{}, nil); !errors.Is(err, ErrEmptyBatch) {
		t.Errorf("FlushedMany(empty): %v", err)
	}
	if _, err := tr.FlushedMany([]WriterID{w}, nil, nil); !errors.Is(err, ErrLengthMismatch) {
		t.Errorf("FlushedMany(mismatch): %v", err)
	}
	if _, err := tr.FlushedMany([]WriterID{w, w}, []Offset{{}, {}}, make([]Status, 1)); !errors.Is(err, ErrLengthMismatch) {
		t.Errorf("FlushedMany(short statuses): %v", err)
	}
	if _, err := tr.TakeEvents(nil); !errors.Is(err, ErrEmptyBatch) {
		t.Errorf("TakeEvents(nil): %v", err)
	}
	b, err := NewBatchBuffer(BatchConfig{MaxMessages: 4, MaxBytes: 8, CapacityBytes: 16, Linger: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.PushMany(nil); !errors.Is(err, ErrEmptyBatch) {
		t.Errorf("PushMany(nil): %v", err)
	}
	if _, err := b.PushMany([]Message{}); !errors.Is(err, ErrEmptyBatch) {
		t.Errorf("PushMany(empty): %v", err)
	}
	// A nil payload is a valid empty message (a Kafka null value).
	if err := b.TryPush(Message{}); err != nil {
		t.Errorf("TryPush(empty message): %v", err)
	}
	err = b.TryPush(Message{Payload: make([]byte, 17)})
	var pe *PushError
	if !errors.Is(err, ErrTooLarge) || !errors.As(err, &pe) || len(pe.Message.Payload) != 17 {
		t.Errorf("too large: %v", err)
	}
	// Capacity: 16 bytes. PushMany hands back the refused suffix, in order.
	msgs := []Message{{Payload: []byte("12345678")}, {Payload: []byte("abcdefgh")}, {Payload: []byte("z")}}
	n, err := b.PushMany(msgs)
	var pme *PushManyError
	if n != 2 || !errors.Is(err, ErrFull) || !errors.As(err, &pme) || len(pme.Rest) != 1 || string(pme.Rest[0].Payload) != "z" {
		t.Errorf("PushMany past capacity: %d %v", n, err)
	}
	if err := b.Ack(nil); !errors.Is(err, ErrNilBatch) {
		t.Errorf("Ack(nil): %v", err)
	}
	if _, err := NewBatchBuffer(BatchConfig{MaxMessages: 10, CapacityMessages: 5}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("capacity below one batch: %v", err)
	}
	if _, err := NewTracker(TrackerOptions{ExpectedWriters: 10, MaxWriters: 5}); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("expected > max writers: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no sink here: stop with no grace
	if r, err := b.Stop(ctx); err != nil || len(r.HandedBack) != 3 {
		t.Fatal(r, err)
	}
}

func TestBatchAckedTwiceAndForeignBatch(t *testing.T) {
	b1, _ := NewBatchBuffer(BatchConfig{MaxMessages: 1})
	b2, _ := NewBatchBuffer(BatchConfig{MaxMessages: 1})
	defer b1.Close()
	defer b2.Close()
	b1.TryPush(Message{Payload: []byte("a")})
	b1.TryPush(Message{Payload: []byte("b")})
	ctx := context.Background()
	bt, err := b1.NextBatch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := bt.Ack(); err != nil {
		t.Fatal(err)
	}
	if err := bt.Ack(); !errors.Is(err, ErrBatchDone) {
		t.Errorf("second ack: %v", err)
	}
	if err := bt.Nack(true); !errors.Is(err, ErrBatchDone) {
		t.Errorf("nack after ack: %v", err)
	}
	bt2, err := b1.NextBatch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b2.Ack(bt2); !errors.Is(err, ErrNotInFlight) {
		t.Errorf("ack on another buffer: %v", err)
	}
	// The foreign ack consumed the handle: b1's stop hands the message back, outcome unknown.
	sctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	r, err := b1.Stop(sctx)
	if err != nil || len(r.HandedBack) != 1 || !r.HandedBack[0].OutcomeUnknown || r.Delivered != 1 {
		t.Fatalf("stop: %+v %v", r, err)
	}
	b2.Stop(ctx)
}

// A batch dropped without Ack/Nack (its finalizer frees the handle as a backstop, whenever it
// runs) is handed back by the stop as outcome-unknown: nothing is lost, nothing crashes.
func TestForgottenBatchFinalizer(t *testing.T) {
	b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 1})
	defer b.Close()
	b.TryPush(Message{Payload: []byte("lost?")})
	func() {
		bt, err := b.NextBatch(context.Background())
		if err != nil || len(bt.Messages) != 1 {
			t.Fatal(err)
		}
	}()
	runtime.GC()
	runtime.GC()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	r, err := b.Stop(ctx)
	if err != nil || len(r.HandedBack) != 1 || string(r.HandedBack[0].Payload) != "lost?" {
		t.Fatalf("stop: %+v %v", r, err)
	}
}
