package tidemark

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// ErrNotAccepting matches both "no more" refusals — the buffer stopping (admission closed,
// draining) and stopped or closed — and nothing else; ErrStopping and ErrClosed still match
// on their own.
func TestErrNotAcceptingMatchesStoppingAndClosed(t *testing.T) {
	b, err := NewBatchBuffer(BatchConfig{MaxMessages: 1, Linger: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.TryPush(Message{Payload: []byte("in flight")}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	bt, err := b.NextBatch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Stopping: admission closed while a batch is still in flight (the grace is long). The
	// first half of Stop, called directly so the state is certain when the pushes run.
	if err := b.beginStop(time.Hour); err != nil {
		t.Fatal(err)
	}
	stopping := b.TryPush(Message{Payload: []byte("late")})
	if !errors.Is(stopping, ErrStopping) || errors.Is(stopping, ErrClosed) || !errors.Is(stopping, ErrNotAccepting) {
		t.Fatalf("push while stopping: %v", stopping)
	}
	_, stoppingMany := b.PushMany([]Message{{Payload: []byte("late")}})
	if !errors.Is(stoppingMany, ErrStopping) || !errors.Is(stoppingMany, ErrNotAccepting) {
		t.Fatalf("push many while stopping: %v", stoppingMany)
	}
	if err := bt.Ack(); err != nil {
		t.Fatal(err)
	}
	if r, err := b.Stop(ctx); err != nil || r.Delivered != 1 {
		t.Fatalf("stop: %+v %v", r, err)
	}
	// Stopped: the library's CLOSED status.
	stopped := b.TryPush(Message{Payload: []byte("later")})
	if !errors.Is(stopped, ErrClosed) || errors.Is(stopped, ErrStopping) || !errors.Is(stopped, ErrNotAccepting) {
		t.Fatalf("push after the stop: %v", stopped)
	}
	// Closed handle: the binding's own refusal.
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	closed := b.TryPush(Message{Payload: []byte("after close")})
	if !errors.Is(closed, ErrClosed) || !errors.Is(closed, ErrNotAccepting) {
		t.Fatalf("push after Close: %v", closed)
	}
	if !errors.Is(ErrStopping, ErrNotAccepting) || !errors.Is(ErrClosed, ErrNotAccepting) || !errors.Is(ErrNotAccepting, ErrNotAccepting) {
		t.Fatal("the sentinels themselves")
	}
	// Everything else is not a "not accepting" refusal.
	for s := StatusNullArgument; s <= StatusOutOfMemory; s++ {
		if s == StatusStopping || s == StatusClosed {
			continue
		}
		if err := s.Err(); errors.Is(err, ErrNotAccepting) {
			t.Errorf("%v matches ErrNotAccepting", err)
		}
	}
	for _, err := range []error{ErrEmptyBatch, ErrNilBatch, ErrNotStopped, &PushError{Err: ErrFull}, Status(99).Err()} {
		if errors.Is(err, ErrNotAccepting) {
			t.Errorf("%v matches ErrNotAccepting", err)
		}
	}
}

// Error texts carry the "tidemark: " prefix once, including errors that wrap another
// tidemark error, and name an unknown status by its number once.
func TestErrorTextsHaveOnePrefix(t *testing.T) {
	tr := newTracker(t, TrackerOptions{})
	w := register(t, tr, 1)[0]
	if err := tr.Unregister(w); err != nil {
		t.Fatal(err)
	}
	_, itemErr := tr.FlushedMany([]WriterID{w}, []Offset{{1, 0}}, nil)

	b, err := NewBatchBuffer(BatchConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	b.Close()
	pushErr := b.TryPush(Message{Payload: []byte("x")})
	_, pushManyErr := b.PushMany([]Message{{Payload: []byte("x")}, {Payload: []byte("y")}})

	for _, c := range []struct {
		err  error
		want string
	}{
		{ErrFull, "tidemark: batch buffer full: retry later"},
		{ErrClosed, "tidemark: closed"},
		{ErrEmptyBatch, "tidemark: empty batch: zero items (nil or empty slice)"},
		{ErrNotAccepting, "tidemark: not accepting (stopping or closed)"},
		{Status(99).Err(), "tidemark: unknown status 99"},
		{itemErr, "tidemark: 1 item(s) failed; first at index 0: unknown writer (never registered, or unregistered: a stale id)"},
		{pushErr, "tidemark: push refused: closed"},
		{pushManyErr, "tidemark: push refused after 0 message(s), 2 handed back: closed"},
		{&PushError{Err: ErrStopping}, "tidemark: push refused: batch buffer stopping: admission closed"},
		{&PushError{Err: context.DeadlineExceeded}, "tidemark: push refused: context deadline exceeded"},
		{&NotStoppedError{Report: &StopReport{HandedBack: make([]HandedBack, 2)}}, "tidemark: batch buffer closed without Stop; 2 message(s) handed back in the report"},
	} {
		if c.err == nil {
			t.Errorf("want %q, got no error", c.want)
			continue
		}
		if got := c.err.Error(); got != c.want {
			t.Errorf("error text %q, want %q", got, c.want)
		}
	}
	// Every status's error, bare and wrapped each way, has the prefix exactly once.
	for s := StatusNullArgument; s <= StatusOutOfMemory+1; s++ {
		e := s.Err()
		for _, err := range []error{
			e,
			&ItemError{Index: 3, Failed: 4, Err: e},
			&PushError{Err: e},
			&PushManyError{Accepted: 1, Err: e},
		} {
			if txt := err.Error(); strings.Count(txt, "tidemark:") != 1 || !strings.HasPrefix(txt, "tidemark: ") {
				t.Errorf("status %d: %q", uint32(s), txt)
			}
		}
	}
}

// The canonical names of docs/ABI.md's vocabulary and the names they replaced both work: an
// evicted writer's refusal Is ErrEvictedWriter and Is its alias ErrEvicted (and nothing
// unrelated), and Tracker.WriterStatus and its alias Tracker.WriterState report the same.
func TestCanonicalNamesAndAliases(t *testing.T) {
	tr, err := NewTracker(TrackerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	w, err := tr.Register()
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Commit(Offset{Tx: 5}, w); err != nil {
		t.Fatal(err)
	}
	if err := tr.Down(w, DownCrash); err != nil {
		t.Fatal(err)
	}
	refused := tr.Flushed(w, Offset{Tx: 5})
	if !errors.Is(refused, ErrEvictedWriter) || !errors.Is(refused, ErrEvicted) {
		t.Fatalf("flush from an evicted writer: %v", refused)
	}
	if errors.Is(refused, ErrUnknownWriter) {
		t.Fatalf("an evicted writer's refusal matched ErrUnknownWriter: %v", refused)
	}
	var e *Error
	if !errors.As(refused, &e) || e.Status() != StatusEvictedWriter {
		t.Fatalf("status behind %v: %v", refused, e)
	}
	if StatusEvictedWriter.Err() != ErrEvictedWriter || ErrEvicted != ErrEvictedWriter {
		t.Fatal("ErrEvicted is not the same sentinel as ErrEvictedWriter")
	}
	st, reason, err := tr.WriterStatus(w)
	if err != nil || st != WriterEvicted || reason != EvictCrashed {
		t.Fatalf("WriterStatus: %v %v %v", st, reason, err)
	}
	st2, reason2, err2 := tr.WriterState(w)
	if st2 != st || reason2 != reason || err2 != nil {
		t.Fatalf("WriterState: %v %v %v, WriterStatus: %v %v", st2, reason2, err2, st, reason)
	}
	if err := tr.Unregister(w); err != nil {
		t.Fatal(err)
	}
	_, _, err = tr.WriterStatus(w)
	_, _, err2 = tr.WriterState(w)
	if !errors.Is(err, ErrUnknownWriter) || !errors.Is(err2, ErrUnknownWriter) {
		t.Fatalf("stale id: WriterStatus %v, WriterState %v", err, err2)
	}
}
