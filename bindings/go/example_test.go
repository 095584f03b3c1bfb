package tidemark_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	tidemark "github.com/tidemark/tidemark-go"
)

// A collector hands each commit to the writers it concerns; the ack moves once every writer
// flushed it.
func ExampleTracker() {
	t, err := tidemark.NewTracker(tidemark.TrackerOptions{})
	if err != nil {
		panic(err)
	}
	defer t.Close()
	a, _ := t.Register()
	b, _ := t.Register()

	_ = t.Commit(tidemark.Offset{Tx: 10, Op: 3}, a, b)
	_ = t.Flushed(b, tidemark.Offset{Tx: 10, Op: 3})
	ack, _ := t.Ack()
	fmt.Println("ack while a owes commit 10:", ack)

	_ = t.Flushed(a, tidemark.Offset{Tx: 10, Op: 3})
	ack, _ = t.Ack()
	fmt.Println("ack after both flushed:", ack)

	p, pinned, _ := t.Pinning()
	fmt.Println("pinned:", pinned, p.Writer == 0)
	// Output:
	// ack while a owes commit 10: 9
	// ack after both flushed: 10
	// pinned: false true
}

// Flush reports for many writers in one cgo crossing.
func ExampleTracker_FlushedMany() {
	t, _ := tidemark.NewTracker(tidemark.TrackerOptions{})
	defer t.Close()
	ws := make([]tidemark.WriterID, 4)
	for i := range ws {
		ws[i], _ = t.Register()
	}
	_ = t.Commit(tidemark.Offset{Tx: 7}, ws...)
	offsets := []tidemark.Offset{{Tx: 7}, {Tx: 7}, {Tx: 7}, {Tx: 7}}
	failed, err := t.FlushedMany(ws, offsets, nil)
	ack, _ := t.Ack()
	fmt.Println(failed, err, ack)
	// Output: 0 <nil> 7
}

// A writer killed without cleanup stops pinning the ack once the host reports it down.
func ExampleTracker_Down() {
	t, _ := tidemark.NewTracker(tidemark.TrackerOptions{StallGrace: time.Minute})
	defer t.Close()
	a, _ := t.Register()
	_ = t.Commit(tidemark.Offset{Tx: 5}, a)
	_ = t.Down(a, tidemark.DownCrash)
	ack, _ := t.Ack()
	events := make([]tidemark.Event, 8)
	n, _ := t.TakeEvents(events)
	fmt.Println(ack, n, events[0].Kind, events[0].Reason)
	fmt.Println(errors.Is(t.Flushed(a, tidemark.Offset{Tx: 5}), tidemark.ErrEvictedWriter))
	// Output:
	// 5 1 evicted crashed
	// true
}

// An async producer: push from anywhere, one sink takes batches, Stop drains the last one.
func ExampleBatchBuffer() {
	buf, err := tidemark.NewBatchBuffer(tidemark.BatchConfig{MaxMessages: 100, Linger: time.Hour})
	if err != nil {
		panic(err)
	}
	defer buf.Close()

	sent := make(chan int)
	go func() { // the sink
		n := 0
		for {
			batch, err := buf.NextBatch(context.Background())
			if err != nil { // ErrClosed: stopped and drained
				sent <- n
				return
			}
			n += len(batch.Messages) // send them somewhere, then:
			_ = batch.Ack()
		}
	}()

	for i := 0; i < 25; i++ {
		if err := buf.TryPush(tidemark.Message{Payload: []byte(fmt.Sprint("event ", i))}); err != nil {
			var refused *tidemark.PushError
			if errors.As(err, &refused) {
				_ = refused.Message // the message comes back: retry or route it elsewhere
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	report, _ := buf.Stop(ctx) // nothing was emitted yet (linger: 1 h); Stop emits it now
	fmt.Println("sent:", <-sent, "delivered:", report.Delivered, "handed back:", len(report.HandedBack))
	// Output: sent: 25 delivered: 25 handed back: 0
}

// A sink that allocates nothing per batch: one Batch, refilled by NextBatchInto. Its messages
// are valid until the next NextBatchInto (copy what must live longer).
func ExampleBatchBuffer_NextBatchInto() {
	buf, err := tidemark.NewBatchBuffer(tidemark.BatchConfig{MaxMessages: 4, Linger: time.Hour})
	if err != nil {
		panic(err)
	}
	defer buf.Close()

	msgs := make([]tidemark.Message, 8)
	for i := range msgs {
		msgs[i] = tidemark.Message{Payload: []byte(fmt.Sprint("row ", i)), Offset: tidemark.Offset{Tx: uint64(i + 1)}, HasOffset: true}
	}
	if _, err := buf.PushMany(msgs); err != nil { // one crossing; msgs may be reused at once
		panic(err)
	}

	var batch tidemark.Batch
	for i := 0; i < 2; i++ {
		if err := buf.NextBatchInto(context.Background(), &batch); err != nil {
			panic(err)
		}
		fmt.Println(len(batch.Messages), string(batch.Messages[0].Payload), "up to tx", batch.HighestOffset.Tx)
		_ = batch.Ack() // batch.Messages stay readable until the next NextBatchInto
	}
	report, _ := buf.Stop(context.Background())
	fmt.Println("delivered:", report.Delivered)
	// Output:
	// 4 row 0 up to tx 4
	// 4 row 4 up to tx 8
	// delivered: 8
}
