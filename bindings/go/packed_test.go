package tidemark

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"
)

// Tests of the packed push path (PushMany over tidemark_batch_buffer_push_packed) and of the
// lifetimes of the batches NextBatch and NextBatchInto hand out. scripts/go-test.sh runs them
// under the race detector and again with GOGC=1.

// mixedMessages: sizes 0..(n-1)%13 bytes (some nil, some empty non-nil), every third message
// without an offset, offsets not in push order.
func mixedMessages(n int) []Message {
	msgs := make([]Message, n)
	for i := range msgs {
		var p []byte
		switch l := i % 13; {
		case i%26 == 0:
			p = nil
		case l == 0:
			p = []byte{}
		default:
			p = bytes.Repeat([]byte{byte(i)}, l)
		}
		msgs[i] = Message{Payload: p}
		if i%3 != 0 {
			msgs[i].Offset = Offset{Tx: uint64(1000 - i%7), Op: uint64(i)}
			msgs[i].HasOffset = true
		}
	}
	return msgs
}

func sameMessage(a, b Message) bool {
	return bytes.Equal(a.Payload, b.Payload) && a.HasOffset == b.HasOffset && (!a.HasOffset || a.Offset == b.Offset)
}

func checkBatch(t *testing.T, bt *Batch, want []Message) {
	t.Helper()
	if len(bt.Messages) != len(want) {
		t.Fatalf("batch of %d messages, want %d", len(bt.Messages), len(want))
	}
	var bytesWant uint64
	var high Offset
	hasHigh := false
	for i, m := range want {
		if !sameMessage(bt.Messages[i], m) {
			t.Fatalf("message %d: %+v, want %+v", i, bt.Messages[i], m)
		}
		if p := bt.Messages[i].Payload; cap(p) != len(p) {
			t.Fatalf("message %d: payload capacity %d above its length %d", i, cap(p), len(p))
		}
		bytesWant += uint64(len(m.Payload))
		if m.HasOffset && (!hasHigh || high.Less(m.Offset)) {
			high, hasHigh = m.Offset, true
		}
	}
	if bt.Bytes != bytesWant || bt.HasOffset != hasHigh || (hasHigh && bt.HighestOffset != high) {
		t.Fatalf("summary bytes %d has %v highest %v, want %d %v %v", bt.Bytes, bt.HasOffset, bt.HighestOffset, bytesWant, hasHigh, high)
	}
}

func cloneMessages(msgs []Message) []Message {
	out := make([]Message, len(msgs))
	for i, m := range msgs {
		out[i] = m
		out[i].Payload = append([]byte(nil), m.Payload...)
	}
	return out
}

// Empty messages, mixed offsets, a call spanning several of the library's 64-message chunks;
// the bytes are copied during the call (the caller may scribble on them at once).
func TestPushManyPackedRoundTrip(t *testing.T) {
	const n = 200
	b, err := NewBatchBuffer(BatchConfig{MaxMessages: n, Linger: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	msgs := mixedMessages(n)
	want := cloneMessages(msgs)
	if k, err := b.PushMany(msgs); k != n || err != nil {
		t.Fatalf("PushMany: %d %v", k, err)
	}
	for i := range msgs {
		for j := range msgs[i].Payload {
			msgs[i].Payload[j] = 0xee
		}
	}
	bt, err := b.NextBatch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if bt.Trigger != TriggerCount {
		t.Errorf("trigger %v", bt.Trigger)
	}
	checkBatch(t, bt, want)
	if err := bt.Ack(); err != nil {
		t.Fatal(err)
	}

	// Only empty messages (no payload bytes at all), with and without offsets.
	empties := []Message{{}, {Payload: []byte{}, Offset: Offset{7, 1}, HasOffset: true}, {}}
	if k, err := b.PushMany(empties); k != 3 || err != nil {
		t.Fatalf("PushMany(empties): %d %v", k, err)
	}
	// A Flush with a done context only marks them due (there is no sink to wait for).
	done, stop := context.WithCancel(context.Background())
	stop()
	if err := b.Flush(done); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	var dst Batch
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.NextBatchInto(ctx, &dst); err != nil {
		t.Fatal(err)
	}
	checkBatch(t, &dst, empties)
	if dst.Bytes != 0 {
		t.Fatalf("bytes %d", dst.Bytes)
	}
	if err := dst.Ack(); err != nil {
		t.Fatal(err)
	}
	r, err := b.Stop(context.Background())
	if err != nil || r.Delivered != n+3 || len(r.HandedBack) != 0 {
		t.Fatalf("stop: %+v %v", r, err)
	}
}

// The longest prefix that fits is taken; Rest is exactly the refused suffix, in order, for
// each refusal the packed call can give.
func TestPushManyPackedRefusals(t *testing.T) {
	ctx := context.Background()
	t.Run("full-messages-across-chunks", func(t *testing.T) {
		b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 100, CapacityMessages: 100, Linger: time.Hour})
		defer b.Close()
		msgs := mixedMessages(150)
		k, err := b.PushMany(msgs)
		var pme *PushManyError
		if k != 100 || !errors.Is(err, ErrFull) || !errors.As(err, &pme) || pme.Accepted != 100 || len(pme.Rest) != 50 || &pme.Rest[0] != &msgs[100] {
			t.Fatalf("PushMany: %d %v", k, err)
		}
		bt, err := b.NextBatch(ctx)
		if err != nil {
			t.Fatal(err)
		}
		checkBatch(t, bt, msgs[:100])
		bt.Ack()
		// Room again: the rest goes in.
		if k, err := b.PushMany(pme.Rest); k != 50 || err != nil {
			t.Fatalf("PushMany(rest): %d %v", k, err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if r, err := b.Stop(cctx); err != nil || len(r.HandedBack) != 50 || !sameMessage(r.HandedBack[0].Message, msgs[100]) {
			t.Fatalf("stop: %+v %v", r, err)
		}
	})
	t.Run("full-bytes", func(t *testing.T) {
		b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 8, MaxBytes: 8, CapacityBytes: 20, Linger: time.Hour})
		defer b.Close()
		msgs := []Message{{Payload: []byte("0123456789")}, {}, {Payload: []byte("abcdefghij")}, {}, {Payload: []byte("z")}}
		k, err := b.PushMany(msgs)
		var pme *PushManyError
		if k != 4 || !errors.Is(err, ErrFull) || !errors.As(err, &pme) || len(pme.Rest) != 1 || string(pme.Rest[0].Payload) != "z" {
			t.Fatalf("PushMany: %d %v", k, err)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		b.Stop(cctx)
	})
	t.Run("too-large-in-the-middle", func(t *testing.T) {
		b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 4, MaxBytes: 8, CapacityBytes: 16, Linger: time.Hour})
		defer b.Close()
		msgs := []Message{{Payload: []byte("a")}, {Payload: []byte("b"), Offset: Offset{1, 0}, HasOffset: true}, {Payload: make([]byte, 17)}, {Payload: []byte("c")}}
		k, err := b.PushMany(msgs)
		var pme *PushManyError
		if k != 2 || !errors.Is(err, ErrTooLarge) || !errors.As(err, &pme) || len(pme.Rest) != 2 || len(pme.Rest[0].Payload) != 17 {
			t.Fatalf("PushMany: %d %v", k, err)
		}
		// The message after the oversize one is still acceptable on its own.
		if k, err := b.PushMany(pme.Rest[1:]); k != 1 || err != nil {
			t.Fatalf("PushMany(after): %d %v", k, err)
		}
		st, _ := b.Stats()
		if st.Accepted != 3 || st.RejectedTooLarge == 0 {
			t.Fatalf("stats %+v", st)
		}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		b.Stop(cctx)
	})
	t.Run("stopping-then-closed", func(t *testing.T) {
		b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 2, Linger: time.Hour})
		defer b.Close()
		if k, err := b.PushMany(mixedMessages(2)); k != 2 || err != nil {
			t.Fatal(k, err)
		}
		held, err := b.NextBatch(ctx) // in flight: the stop waits for it
		if err != nil {
			t.Fatal(err)
		}
		if err := b.beginStop(time.Hour); err != nil {
			t.Fatal(err)
		}
		msgs := mixedMessages(5)
		k, err := b.PushMany(msgs)
		var pme *PushManyError
		if k != 0 || !errors.Is(err, ErrStopping) || !errors.Is(err, ErrNotAccepting) || !errors.As(err, &pme) || len(pme.Rest) != 5 {
			t.Fatalf("PushMany while stopping: %d %v", k, err)
		}
		if err := held.Ack(); err != nil {
			t.Fatal(err)
		}
		r, err := b.Stop(ctx)
		if err != nil || r.Delivered != 2 {
			t.Fatalf("stop: %+v %v", r, err)
		}
		if k, err := b.PushMany(msgs); k != 0 || !errors.Is(err, ErrClosed) {
			t.Fatalf("PushMany after stop: %d %v", k, err)
		}
		b.Close()
		if k, err := b.PushMany(msgs); k != 0 || !errors.Is(err, ErrClosed) || !errors.As(err, &pme) || len(pme.Rest) != 5 {
			t.Fatalf("PushMany after Close: %d %v", k, err)
		}
	})
}

// A call larger than the pooled scratch limit (and than one batch): every byte arrives, in
// batches cut by the bytes trigger.
func TestPushManyLargeCall(t *testing.T) {
	const n, size = 1500, 3000 // 4.5 MB: above maxPooledScratch
	b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 4096, CapacityMessages: 4096, MaxBytes: 1 << 20, Linger: time.Hour})
	defer b.Close()
	msgs := make([]Message, n)
	for i := range msgs {
		msgs[i] = Message{Payload: encodeSized(i, size), Offset: Offset{uint64(i + 1), 0}, HasOffset: true}
	}
	if k, err := b.PushMany(msgs); k != n || err != nil {
		t.Fatalf("PushMany: %d %v", k, err)
	}
	// The last, partial batch is emitted by a flush (marked due; there is no sink to wait for).
	done, stop := context.WithCancel(context.Background())
	stop()
	b.Flush(done)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard only
	defer cancel()
	var dst Batch
	got := 0
	for got < n {
		if err := b.NextBatchInto(ctx, &dst); err != nil {
			t.Fatal(err)
		}
		if (dst.Trigger != TriggerBytes && dst.Trigger != TriggerFlush) || dst.Bytes > 1<<20 {
			t.Fatalf("trigger %v bytes %d", dst.Trigger, dst.Bytes)
		}
		for _, m := range dst.Messages {
			if !sameMessage(m, msgs[got]) {
				t.Fatalf("message %d differs", got)
			}
			got++
		}
		if err := dst.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := b.Stop(context.Background()); err != nil || r.Delivered != n {
		t.Fatalf("stop: %+v %v", r, err)
	}
}

func encodeSized(i, size int) []byte {
	p := make([]byte, size)
	for j := range p {
		p[j] = byte(i*31 + j)
	}
	return p
}

// NextBatch's batches are the caller's: intact after Ack, after later batches reuse the
// library's memory, after GC, after Stop and Close.
func TestNextBatchCopyOutlivesAck(t *testing.T) {
	b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 64, Linger: time.Hour})
	msgs := mixedMessages(64)
	want := cloneMessages(msgs)
	b.PushMany(msgs)
	first, err := b.NextBatch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Ack(); err != nil {
		t.Fatal(err)
	}
	var dst Batch
	for round := 0; round < 20; round++ { // the library reuses its arena for these
		other := make([]Message, 64)
		for i := range other {
			other[i] = Message{Payload: bytes.Repeat([]byte{0xab}, 12)}
		}
		b.PushMany(other)
		if err := b.NextBatchInto(context.Background(), &dst); err != nil {
			t.Fatal(err)
		}
		dst.Ack()
		runtime.GC()
	}
	if r, err := b.Stop(context.Background()); err != nil || r.Delivered != 21*64 {
		t.Fatalf("stop: %+v %v", r, err)
	}
	b.Close()
	runtime.GC()
	checkBatch(t, first, want)
}

// NextBatchInto reuses dst's buffers; its contents are valid until the next NextBatchInto
// into dst; it refuses a dst still in flight and takes nothing then.
func TestNextBatchIntoReuse(t *testing.T) {
	ctx := context.Background()
	b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 32, Linger: time.Hour})
	defer b.Close()
	if err := b.NextBatchInto(ctx, nil); !errors.Is(err, ErrNilBatch) {
		t.Fatalf("NextBatchInto(nil): %v", err)
	}
	var zero Batch
	if err := zero.Ack(); !errors.Is(err, ErrBatchDone) {
		t.Fatalf("Ack of the zero Batch: %v", err)
	}
	batchOf := func(tag byte) []Message {
		msgs := make([]Message, 32)
		for i := range msgs {
			msgs[i] = Message{Payload: bytes.Repeat([]byte{tag}, 16), Offset: Offset{uint64(tag), uint64(i)}, HasOffset: i%2 == 0}
		}
		return msgs
	}
	b.PushMany(batchOf('a'))
	b.PushMany(batchOf('b'))
	var dst Batch
	if err := b.NextBatchInto(ctx, &dst); err != nil {
		t.Fatal(err)
	}
	checkBatch(t, &dst, batchOf('a'))
	backing := &dst.Messages[0].Payload[0]
	msgsBacking := &dst.Messages[0]
	// Still in flight: refused, nothing taken.
	if err := b.NextBatchInto(ctx, &dst); !errors.Is(err, ErrBatchInFlight) || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("NextBatchInto of an in-flight batch: %v", err)
	}
	checkBatch(t, &dst, batchOf('a'))
	if err := dst.Ack(); err != nil {
		t.Fatal(err)
	}
	if err := dst.Ack(); !errors.Is(err, ErrBatchDone) {
		t.Fatalf("second Ack: %v", err)
	}
	checkBatch(t, &dst, batchOf('a')) // Ack leaves the contents alone
	old := dst.Messages
	if err := b.NextBatchInto(ctx, &dst); err != nil {
		t.Fatal(err)
	}
	checkBatch(t, &dst, batchOf('b'))
	if &dst.Messages[0].Payload[0] != backing || &dst.Messages[0] != msgsBacking {
		t.Errorf("NextBatchInto did not reuse dst's buffers")
	}
	if old[0].Payload[0] != 'b' { // documented: overwritten in place
		t.Errorf("the earlier contents were not reused: %q", old[0].Payload)
	}
	if err := dst.Nack(false); err != nil {
		t.Fatal(err)
	}
	if err := dst.Nack(true); !errors.Is(err, ErrBatchDone) {
		t.Fatalf("Nack after Nack: %v", err)
	}
	if r, err := b.Stop(ctx); err != nil || r.Delivered != 32 || r.Failed != 32 {
		t.Fatalf("stop: %+v %v", r, err)
	}
	// After the stop: ErrClosed, dst untouched.
	if err := b.NextBatchInto(ctx, &dst); !errors.Is(err, ErrClosed) {
		t.Fatalf("NextBatchInto after stop: %v", err)
	}
	checkBatch(t, &dst, batchOf('b'))
}

// A Batch from NextBatch passed to NextBatchInto (once given back) does not get its earlier
// payloads overwritten: NextBatch's contract holds.
func TestNextBatchIntoKeepsNextBatchContract(t *testing.T) {
	ctx := context.Background()
	b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 16, Linger: time.Hour})
	defer b.Close()
	first := mixedMessages(16)
	want := cloneMessages(first)
	b.PushMany(first)
	b.PushMany(mixedMessages(16)[8:])
	b.PushMany(mixedMessages(8))
	bt, err := b.NextBatch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.NextBatchInto(ctx, bt); !errors.Is(err, ErrBatchInFlight) {
		t.Fatalf("in flight: %v", err)
	}
	kept := bt.Messages
	if err := bt.Ack(); err != nil {
		t.Fatal(err)
	}
	if err := b.NextBatchInto(ctx, bt); err != nil {
		t.Fatal(err)
	}
	if err := bt.Ack(); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if !sameMessage(kept[i], want[i]) {
			t.Fatalf("NextBatch's message %d was overwritten: %+v", i, kept[i])
		}
	}
	b.Stop(ctx)
}

// dst may be a field or an array element (no finalizer is set on it); one dropped while
// holding a batch has its handle released by the finalizer, and the stop hands the batch back.
func TestNextBatchIntoInteriorAndForgotten(t *testing.T) {
	ctx := context.Background()
	b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 1, Linger: time.Hour})
	defer b.Close()
	for _, s := range []string{"kept", "dropped"} {
		b.TryPush(Message{Payload: []byte(s)})
	}
	holders := make([]struct {
		pad [3]uint64
		bt  Batch
	}, 2)
	if err := b.NextBatchInto(ctx, &holders[1].bt); err != nil {
		t.Fatal(err)
	}
	if string(holders[1].bt.Messages[0].Payload) != "kept" {
		t.Fatalf("payload %q", holders[1].bt.Messages[0].Payload)
	}
	if err := holders[1].bt.Ack(); err != nil {
		t.Fatal(err)
	}
	before := batchesFinalized.Load()
	func() {
		var h struct {
			pad int
			bt  Batch
		}
		if err := b.NextBatchInto(ctx, &h.bt); err != nil || string(h.bt.Messages[0].Payload) != "dropped" {
			t.Fatal(err)
		}
	}()
	for i := 0; batchesFinalized.Load() == before; i++ {
		if i == 1000 {
			t.Fatal("the dropped batch's finalizer never ran")
		}
		runtime.GC()
		time.Sleep(time.Millisecond)
	}
	sctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	r, err := b.Stop(sctx)
	if err != nil || r.Delivered != 1 || len(r.HandedBack) != 1 || !r.HandedBack[0].OutcomeUnknown || string(r.HandedBack[0].Payload) != "dropped" {
		t.Fatalf("stop: %+v %v", r, err)
	}
}

// Producers packing concurrently while the sink reuses one Batch: every message arrives
// intact, once, in each producer's order (run under -race by scripts/go-test.sh).
func TestPackedProducersReusingSink(t *testing.T) {
	const producers, perP, chunk = 3, 20_000, 100
	b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 256, Linger: time.Millisecond, CapacityMessages: 2048, MaxInflightBatches: 2})
	defer b.Close()
	next := make([]uint32, producers)
	var sinkErr error
	sinkDone := make(chan struct{})
	go func() {
		defer close(sinkDone)
		var dst Batch
		for {
			if err := b.NextBatchInto(context.Background(), &dst); err != nil {
				return
			}
			for _, m := range dst.Messages {
				if len(m.Payload) == 0 { // the empty marker every 7th message
					if !m.HasOffset {
						sinkErr = fmt.Errorf("empty marker without its offset")
					}
					continue
				}
				g, seq := decodeErr(m.Payload)
				if g >= producers || seq != next[g] || !m.HasOffset || m.Offset != (Offset{uint64(seq), uint64(g)}) {
					if sinkErr == nil {
						sinkErr = fmt.Errorf("producer %d message %d (want %d) offset %v %v", g, seq, next[int(g)%producers], m.Offset, m.HasOffset)
					}
					continue
				}
				next[g]++
			}
			if err := dst.Ack(); err != nil && sinkErr == nil {
				sinkErr = err
			}
		}
	}()
	var wg sync.WaitGroup
	for g := 0; g < producers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			msgs := make([]Message, 0, chunk+chunk/7+1)
			for seq := 0; seq < perP; {
				msgs = msgs[:0]
				for i := seq; i < perP && i < seq+chunk; i++ {
					msgs = append(msgs, Message{Payload: encode(uint32(g), uint32(i)), Offset: Offset{uint64(i), uint64(g)}, HasOffset: true})
					if i%7 == 0 {
						msgs = append(msgs, Message{Offset: Offset{uint64(i), uint64(g)}, HasOffset: true})
					}
				}
				rest := msgs
				for len(rest) > 0 {
					k, err := b.PushMany(rest)
					rest = rest[k:]
					if err != nil {
						if !errors.Is(err, ErrFull) {
							t.Error(err)
							return
						}
						runtime.Gosched()
					}
				}
				seq += chunk
			}
		}(g)
	}
	wg.Wait()
	r, err := b.Stop(context.Background())
	<-sinkDone
	if err != nil || len(r.HandedBack) != 0 {
		t.Fatalf("stop: %+v %v", r, err)
	}
	if sinkErr != nil {
		t.Fatal(sinkErr)
	}
	for g, n := range next {
		if n != perP {
			t.Errorf("producer %d: %d of %d messages delivered", g, n, perP)
		}
	}
}

// decodeErr is decode (producer_test.go) without a testing.TB, for the sink goroutine: an
// out-of-range producer number for a malformed payload.
func decodeErr(p []byte) (g, seq uint32) {
	if len(p) != 12 {
		return 1 << 31, 0
	}
	g, seq = binary.LittleEndian.Uint32(p), binary.LittleEndian.Uint32(p[4:])
	if binary.LittleEndian.Uint32(p[8:]) != g^seq^0x5a5a5a5a {
		return 1 << 31, 0
	}
	return g, seq
}

// The hot paths allocate nothing in the steady state: TryPush; PushMany (pooled scratch);
// NextBatchInto + Ack. Not checked under the race detector (sync.Pool drops items at random
// there); GC is held off during the count so GOGC=1 does not empty the pool mid-run.
func TestSteadyStateAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	ctx := context.Background()
	b, _ := NewBatchBuffer(BatchConfig{MaxMessages: 256, Linger: time.Hour, CapacityMessages: 1 << 16})
	defer func() {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		b.Stop(cctx)
		b.Close()
	}()
	msgs := mixedMessages(256)
	var dst Batch
	cycle := func() {
		if k, err := b.PushMany(msgs); k != len(msgs) || err != nil {
			t.Fatal(k, err)
		}
		if err := b.NextBatchInto(ctx, &dst); err != nil {
			t.Fatal(err)
		}
		if err := dst.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	if a := testing.AllocsPerRun(50, cycle); a != 0 {
		t.Errorf("PushMany(256) + NextBatchInto + Ack: %v allocations per cycle", a)
	}
	m := Message{Payload: make([]byte, 64), Offset: Offset{1, 2}, HasOffset: true}
	if a := testing.AllocsPerRun(1000, func() {
		if err := b.TryPush(m); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("TryPush: %v allocations per call", a)
	}
}
