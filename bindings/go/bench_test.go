package tidemark

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ---- Tracker ------------------------------------------------------------------------------

// progressSetup: writer 0 pins the ack (owes commit 1, never reports); the others owe commit 2
// with a huge op, so their reports are progress that never completes: the cost of one flush
// report on the common path (a writer that does not pin the ack).
func progressSetup(b *testing.B, n int) (*Tracker, []WriterID) {
	tr, err := NewTracker(TrackerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { tr.Close() })
	pin, _ := tr.Register()
	ws := make([]WriterID, n)
	for i := range ws {
		ws[i], _ = tr.Register()
	}
	if err := tr.Commit(Offset{1, 0}, pin); err != nil {
		b.Fatal(err)
	}
	if err := tr.Commit(Offset{2, 1 << 62}, ws...); err != nil {
		b.Fatal(err)
	}
	return tr, ws
}

func BenchmarkFlushed(b *testing.B) {
	b.Run("progress", func(b *testing.B) {
		tr, ws := progressSetup(b, 256)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := tr.Flushed(ws[i&255], Offset{2, uint64(i>>8) + 1}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("progress-parallel", func(b *testing.B) {
		tr, ws := progressSetup(b, 256)
		var next atomic.Int64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			g := int(next.Add(1)) // each goroutine its own writers: reports per writer stay ordered
			mine := ws[(g*16)%256 : (g*16)%256+16]
			i := 0
			for pb.Next() {
				if err := tr.Flushed(mine[i&15], Offset{2, uint64(i>>4) + 1}); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	})
	b.Run("pipeline", func(b *testing.B) { // docs/CONTRACT.md §8 workload; commits amortised in
		tr, _ := NewTracker(TrackerOptions{})
		defer tr.Close()
		pipeline(b, tr.Register, tr.Commit, tr.Flushed)
	})
}

// BenchmarkFlushedUnguarded: BenchmarkFlushed/progress without the RWMutex handle guard.
func BenchmarkFlushedUnguarded(b *testing.B) {
	tr, ws := progressSetup(b, 256)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if s := tr.flushedUnguarded(ws[i&255], Offset{2, uint64(i>>8) + 1}); s != StatusOK {
			b.Fatal(s)
		}
	}
}

// pipeline: 10 000 writers, 4 per commit (drawn pseudo-randomly), each commit's writers
// report it 64 commits later. One iteration = one writer-op (a flush report, plus a quarter
// of a commit).
func pipeline(b *testing.B, register func() (WriterID, error), commit func(Offset, ...WriterID) error, flushed func(WriterID, Offset) error) {
	const nWriters, lag = 10_000, 64
	ws := make([]WriterID, nWriters)
	for i := range ws {
		ws[i], _ = register()
	}
	type pending struct {
		off Offset
		ws  [4]WriterID
	}
	var ring [lag]pending
	rng := uint64(88172645463325252)
	tx := uint64(0)
	b.ResetTimer()
	for i := 0; i < b.N; i += 4 {
		tx++
		slot := &ring[tx%lag]
		if tx > lag {
			for _, w := range slot.ws {
				if err := flushed(w, slot.off); err != nil {
					b.Fatal(err)
				}
			}
		}
		var pick [4]WriterID
	draw:
		for k := 0; k < 4; k++ {
			rng ^= rng << 13
			rng ^= rng >> 7
			rng ^= rng << 17
			w := ws[rng%nWriters]
			for _, p := range pick[:k] {
				if p == w {
					k--
					continue draw
				}
			}
			pick[k] = w
		}
		*slot = pending{off: Offset{tx, 0}, ws: pick}
		if err := commit(slot.off, pick[:]...); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFlushedMany256(b *testing.B) {
	b.Run("progress", func(b *testing.B) {
		tr, ws := progressSetup(b, 256)
		offs := make([]Offset, 256)
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			for j := range offs {
				offs[j] = Offset{2, uint64(i) + 1}
			}
			if failed, err := tr.FlushedMany(ws, offs, nil); err != nil || failed != 0 {
				b.Fatal(failed, err)
			}
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N)/256, "ns/writer-op")
	})
	b.Run("pipeline", func(b *testing.B) { // 64 commits of 4 writers, then their 256 reports in one call
		tr, _ := NewTracker(TrackerOptions{})
		defer tr.Close()
		const nWriters = 10_000
		ws := make([]WriterID, nWriters)
		for i := range ws {
			ws[i], _ = tr.Register()
		}
		rw := make([]WriterID, 256)
		ro := make([]Offset, 256)
		tx := uint64(0)
		next := 0
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < b.N; i++ {
			for c := 0; c < 64; c++ {
				tx++
				w4 := rw[c*4 : c*4+4]
				for k := range w4 {
					w4[k] = ws[next%nWriters]
					next += 2477 // coprime stride: 4 distinct writers
					ro[c*4+k] = Offset{tx, 0}
				}
				if err := tr.Commit(Offset{tx, 0}, w4...); err != nil {
					b.Fatal(err)
				}
			}
			if failed, err := tr.FlushedMany(rw, ro, nil); err != nil || failed != 0 {
				b.Fatal(failed, err)
			}
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/float64(b.N)/256, "ns/writer-op")
	})
}

// mutexTracker: the pure-Go baseline: one mutex, a map of writers, an ordered slice of
// deliveries (commit order) popped lazily from the front. Exact, like tidemark.
type mutexTracker struct {
	mu      sync.Mutex
	writers map[WriterID]*mtWriter
	log     []mtDelivery
	head    int
	next    WriterID
	ack     uint64
	hasAck  bool
	last    Offset
}

type mtWriter struct {
	lastSent, flushed Offset
	pending           bool
	epoch             uint64
}

type mtDelivery struct {
	w     *mtWriter
	epoch uint64
	off   Offset
}

func newMutexTracker() *mutexTracker { return &mutexTracker{writers: map[WriterID]*mtWriter{}} }

func (t *mutexTracker) Register() (WriterID, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	t.writers[t.next] = &mtWriter{}
	return t.next, nil
}

func (t *mutexTracker) Commit(off Offset, ws ...WriterID) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.last.Less(off) || t.last.Tx == off.Tx {
		if t.last != (Offset{}) {
			return ErrOffsetRegressed
		}
	}
	for _, id := range ws {
		w, ok := t.writers[id]
		if !ok {
			return ErrUnknownWriter
		}
		if !w.pending {
			w.pending = true
			w.epoch++
			w.flushed = Offset{}
		}
		w.lastSent = off
		t.log = append(t.log, mtDelivery{w, w.epoch, off})
	}
	t.last = off
	t.advance()
	return nil
}

func (t *mutexTracker) Flushed(id WriterID, off Offset) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	w, ok := t.writers[id]
	if !ok {
		return ErrUnknownWriter
	}
	if !w.pending {
		return nil
	}
	if !off.Less(w.lastSent) {
		w.pending = false
		w.epoch++
	} else if w.flushed.Less(off) {
		w.flushed = off
	}
	t.advance()
	return nil
}

func (t *mutexTracker) advance() {
	for t.head < len(t.log) {
		d := t.log[t.head]
		if d.w.epoch == d.epoch && d.w.flushed.Less(d.off) {
			break
		}
		t.head++
	}
	if t.head == len(t.log) {
		t.log, t.head = t.log[:0], 0
		t.ack, t.hasAck = t.last.Tx, true
	} else if a := t.log[t.head].off.Tx - 1; !t.hasAck || a > t.ack {
		t.ack, t.hasAck = a, true
	}
	if t.head > 4096 && t.head*2 > len(t.log) {
		t.log = append(t.log[:0], t.log[t.head:]...)
		t.head = 0
	}
}

func BenchmarkBaselineMutexTracker(b *testing.B) {
	b.Run("progress", func(b *testing.B) {
		t := newMutexTracker()
		pin, _ := t.Register()
		ws := make([]WriterID, 256)
		for i := range ws {
			ws[i], _ = t.Register()
		}
		t.Commit(Offset{1, 0}, pin)
		t.Commit(Offset{2, 1 << 62}, ws...)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			t.Flushed(ws[i&255], Offset{2, uint64(i>>8) + 1})
		}
	})
	b.Run("pipeline", func(b *testing.B) {
		t := newMutexTracker()
		pipeline(b, t.Register, t.Commit, t.Flushed)
	})
}

// ---- Batch buffer -------------------------------------------------------------------------

const benchPayload = 64

// drainingSink runs a sink that acks everything until the buffer closes: NextBatch (a fresh Go
// copy per batch) or, with into, NextBatchInto (one reused Batch).
func drainingSink(buf *BatchBuffer, into bool) chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		var dst Batch
		for {
			bt := &dst
			var err error
			if into {
				err = buf.NextBatchInto(context.Background(), bt)
			} else {
				bt, err = buf.NextBatch(context.Background())
			}
			if err != nil {
				return
			}
			buf.Ack(bt)
		}
	}()
	return done
}

func stopAndWait(b *testing.B, buf *BatchBuffer, sink chan struct{}) *StopReport {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := buf.Stop(ctx)
	if err != nil {
		b.Fatal(err)
	}
	<-sink
	buf.Close()
	return r
}

var benchCfg = BatchConfig{MaxMessages: 512, Linger: 5 * time.Millisecond, CapacityMessages: 16384}

// benchMessages: n distinct pre-built messages of benchPayload bytes.
func benchMessages(n int) []Message {
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = Message{Payload: make([]byte, benchPayload)}
		msgs[i].Payload[0] = byte(i)
	}
	return msgs
}

// BenchmarkTryPush: one message offered at a time (64 B; the sink drains with NextBatchInto,
// so no sink allocation rides on the figure), against one send on the channel of each baseline
// batcher (with its batching goroutine and sink draining). ns/op is per message.
func BenchmarkTryPush(b *testing.B) {
	b.Run("tidemark", func(b *testing.B) {
		buf, _ := NewBatchBuffer(benchCfg)
		sink := drainingSink(buf, true)
		m := Message{Payload: make([]byte, benchPayload)}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			for {
				err := buf.TryPush(m)
				if err == nil {
					break
				}
				if !errors.Is(err, ErrFull) {
					b.Fatal(err)
				}
				runtime.Gosched()
			}
		}
		b.StopTimer()
		stopAndWait(b, buf, sink)
	})
	b.Run("chan-Message", func(b *testing.B) {
		c := newChanBatcher(16384, 512, 5*time.Millisecond, func([]Message) {})
		m := Message{Payload: make([]byte, benchPayload)}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c.Push(m)
		}
		b.StopTimer()
		c.Stop()
	})
	b.Run("chan-slice", func(b *testing.B) {
		c := newChanBatcher(16384, 512, 5*time.Millisecond, func([][]byte) {})
		p := make([]byte, benchPayload)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			c.Push(p)
		}
		b.StopTimer()
		c.Stop()
	})
}

func pushAllMany(b *testing.B, buf *BatchBuffer, msgs []Message, n int) {
	for sent := 0; sent < n; {
		chunk := msgs
		if n-sent < len(chunk) {
			chunk = chunk[:n-sent]
		}
		for len(chunk) > 0 {
			k, err := buf.PushMany(chunk)
			sent += k
			chunk = chunk[k:]
			if err != nil {
				if !errors.Is(err, ErrFull) {
					b.Fatal(err)
				}
				runtime.Gosched()
			}
		}
	}
}

func BenchmarkPushMany256(b *testing.B) {
	buf, _ := NewBatchBuffer(benchCfg)
	sink := drainingSink(buf, false)
	msgs := benchMessages(256)
	b.ReportAllocs()
	b.ResetTimer()
	pushAllMany(b, buf, msgs, b.N) // b.N messages: ns/op is per message
	b.StopTimer()
	stopAndWait(b, buf, sink)
}

// chanBatcher: the pure-Go baseline, shaped like the producer of the story: producers send on
// a buffered channel; one goroutine batches by count (512) and linger (age of the batch's
// first message) and hands batches to the sink; Stop closes admission and drains. T is what a
// producer sends: Message (baseline (a): a 48-byte value whose Payload references the
// producer's bytes) or []byte (baseline (b): a 24-byte slice header referencing a pre-built
// payload). Neither copies payload bytes.
type chanBatcher[T any] struct {
	in    chan T
	stop  chan struct{}
	done  chan struct{}
	sink  func([]T)
	max   int
	lnger time.Duration
}

func newChanBatcher[T any](capacity, max int, linger time.Duration, sink func([]T)) *chanBatcher[T] {
	c := &chanBatcher[T]{in: make(chan T, capacity), stop: make(chan struct{}), done: make(chan struct{}), sink: sink, max: max, lnger: linger}
	go c.run()
	return c
}

func (c *chanBatcher[T]) Push(m T) { c.in <- m }

func (c *chanBatcher[T]) run() {
	defer close(c.done)
	batch := make([]T, 0, c.max)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	emit := func() {
		if len(batch) > 0 {
			c.sink(batch)
			batch = make([]T, 0, c.max)
		}
		timer.Stop()
	}
	add := func(m T) {
		if len(batch) == 0 {
			timer.Reset(c.lnger)
		}
		batch = append(batch, m)
		if len(batch) == c.max {
			emit()
		}
	}
	for {
		select {
		case m := <-c.in:
			add(m)
		case <-timer.C:
			emit()
		case <-c.stop:
			for {
				select {
				case m := <-c.in:
					add(m)
				default:
					emit()
					return
				}
			}
		}
	}
}

// Stop: the caller guarantees producers are done (admission closed), then everything is drained.
func (c *chanBatcher[T]) Stop() { close(c.stop); <-c.done }

func share(n, parts, i int) int {
	s := n / parts
	if i < n%parts {
		s++
	}
	return s
}

func itoa(i int) string { return string(rune('0' + i)) }

// BenchmarkPushManyPack: the Go side of PushMany(256) alone (packing 256 messages of 64 B into
// the scratch buffer and descriptors, no crossing). ns/op is per message.
func BenchmarkPushManyPack(b *testing.B) {
	msgs := benchMessages(256)
	sc := new(pushScratch)
	b.ResetTimer()
	for i := 0; i < b.N; i += len(msgs) {
		sc.pack(msgs)
	}
}
