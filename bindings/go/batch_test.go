package tidemark

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestNackRequeueKeepsOrder(t *testing.T) {
	b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 3, Linger: time.Millisecond})
	defer b.Close()
	for i := 0; i < 6; i++ {
		b.TryPush(Message{Payload: []byte(fmt.Sprint(i)), Offset: Offset{uint64(i), 0}, HasOffset: true})
	}
	ctx := context.Background()
	first, err := b.NextBatch(ctx)
	if err != nil || len(first.Messages) != 3 || first.Trigger != TriggerCount || first.HighestOffset != (Offset{2, 0}) {
		t.Fatalf("first batch %+v %v", first, err)
	}
	if err := b.Nack(first, true); err != nil {
		t.Fatal(err)
	}
	again, err := b.NextBatch(ctx)
	if err != nil || string(again.Messages[0].Payload) != "0" || string(again.Messages[2].Payload) != "2" {
		t.Fatalf("requeued batch %+v %v", again, err)
	}
	if err := again.Ack(); err != nil {
		t.Fatal(err)
	}
	last, _ := b.NextBatch(ctx)
	if err := last.Nack(false); err != nil { // failed: terminal
		t.Fatal(err)
	}
	r, err := b.Stop(ctx)
	if err != nil || r.Delivered != 3 || r.Failed != 3 || len(r.HandedBack) != 0 {
		t.Fatalf("report %+v %v", r, err)
	}
	st, _ := b.Stats()
	_ = st
}

func TestFlushBypassesLinger(t *testing.T) {
	b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 100, Linger: time.Hour})
	defer b.Close()
	got := make(chan Trigger, 10)
	go func() {
		for {
			bt, err := b.NextBatch(context.Background())
			if err != nil {
				close(got)
				return
			}
			got <- bt.Trigger
			bt.Ack()
		}
	}()
	for i := 0; i < 5; i++ {
		b.TryPush(Message{Payload: []byte("x")})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if tr := <-got; tr != TriggerFlush {
		t.Fatalf("trigger %v", tr)
	}
	st, _ := b.Stats()
	if st.Delivered != 5 {
		t.Fatalf("delivered %d after Flush", st.Delivered)
	}
	// Flush with nothing taken by a sink honours ctx.
	b.Stop(ctx)
	for range got {
	}
}

func TestPushWaitsWhileFull(t *testing.T) {
	b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 1, CapacityMessages: 1, Linger: time.Hour})
	defer b.Close()
	if err := b.TryPush(Message{Payload: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := b.Push(ctx, Message{Payload: []byte("b")}); !errors.Is(err, ErrFull) {
		t.Fatalf("Push into a full buffer: %v", err)
	}
	go func() {
		bt, _ := b.NextBatch(context.Background())
		time.Sleep(10 * time.Millisecond)
		bt.Ack()
	}()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := b.Push(ctx2, Message{Payload: []byte("b")}); err != nil {
		t.Fatalf("Push after the sink freed room: %v", err)
	}
	ctx3, cancel3 := context.WithCancel(context.Background())
	cancel3()
	b.Stop(ctx3)
}

// The tracker link: acking a batch reports its highest offset as the writer's flush.
func TestTrackerLink(t *testing.T) {
	tr := newTracker(t, TrackerOptions{})
	w := register(t, tr, 1)[0]
	b, err := NewBatchBuffer(BatchConfig{MaxMessages: 2, Linger: time.Millisecond, LinkTracker: tr, LinkWriter: w})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for tx := uint64(1); tx <= 2; tx++ {
		if err := tr.Commit(Offset{tx, 0}, w); err != nil {
			t.Fatal(err)
		}
		b.TryPush(Message{Payload: []byte("row"), Offset: Offset{tx, 0}, HasOffset: true})
	}
	mustAck(t, tr, 0)
	bt, err := b.NextBatch(context.Background())
	if err != nil || bt.HighestOffset != (Offset{2, 0}) {
		t.Fatalf("batch %+v %v", bt, err)
	}
	if err := bt.Ack(); err != nil {
		t.Fatal(err)
	}
	mustAck(t, tr, 2)
	// The buffer keeps the native tracker alive after the Go tracker is closed; a report for
	// an evicted writer is LinkFailed (delivered all the same).
	tr.Down(w, DownCrash)
	tr.Close()
	b.TryPush(Message{Payload: []byte("row"), Offset: Offset{3, 0}, HasOffset: true})
	bt, _ = b.NextBatch(context.Background())
	if err := bt.Ack(); !errors.Is(err, ErrLinkFailed) {
		t.Fatalf("ack with an evicted link writer: %v", err)
	}
	r, _ := b.Stop(context.Background())
	if r.Delivered != 3 {
		t.Fatalf("report %+v", r)
	}
}
