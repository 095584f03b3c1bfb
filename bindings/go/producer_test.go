package tidemark

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// kafkaProducer is the async producer of docs/CONTRACT.md §1 story 2, built on BatchBuffer: Produce
// never blocks for long, one sink goroutine "sends" batches and acks them, Close stops the
// buffer (drain, then hand back) and reports what was handed back.
type kafkaProducer struct {
	buf       *BatchBuffer
	sinkDelay time.Duration

	mu        sync.Mutex
	delivered []Message // acked successfully, in ack order
	triggers  map[Trigger]int
	ackErrs   int

	sinkDone chan struct{}
}

func newKafkaProducer(t testing.TB, cfg BatchConfig, sinkDelay time.Duration) *kafkaProducer {
	t.Helper()
	b, err := NewBatchBuffer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &kafkaProducer{buf: b, sinkDelay: sinkDelay, triggers: map[Trigger]int{}, sinkDone: make(chan struct{})}
	go p.sink()
	return p
}

func (p *kafkaProducer) sink() {
	defer close(p.sinkDone)
	for {
		bt, err := p.buf.NextBatch(context.Background())
		if err != nil {
			return // ErrClosed: stopped and drained
		}
		if p.sinkDelay > 0 {
			time.Sleep(p.sinkDelay)
		}
		err = p.buf.Ack(bt)
		p.mu.Lock()
		if err == nil {
			p.delivered = append(p.delivered, bt.Messages...)
			p.triggers[bt.Trigger]++
		} else {
			p.ackErrs++ // e.g. ErrNotInFlight: handed back by a stop whose deadline passed
		}
		p.mu.Unlock()
	}
}

// Produce retries while the buffer is full; any other refusal is returned (with the message).
func (p *kafkaProducer) Produce(m Message) error {
	for {
		err := p.buf.TryPush(m)
		if !errors.Is(err, ErrFull) {
			return err
		}
		runtime.Gosched()
	}
}

// Close stops the buffer, waits for the sink, releases the handle.
func (p *kafkaProducer) Close(ctx context.Context) (*StopReport, error) {
	r, err := p.buf.Stop(ctx)
	<-p.sinkDone
	if cerr := p.buf.Close(); err == nil {
		err = cerr
	}
	return r, err
}

func (p *kafkaProducer) deliveredCopy() []Message {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Message(nil), p.delivered...)
}

func encode(g, seq uint32) []byte {
	b := make([]byte, 12)
	binary.LittleEndian.PutUint32(b, g)
	binary.LittleEndian.PutUint32(b[4:], seq)
	binary.LittleEndian.PutUint32(b[8:], g^seq^0x5a5a5a5a) // a checksum: catches torn copies
	return b
}

func decode(t testing.TB, b []byte) (g, seq uint32) {
	if len(b) != 12 {
		t.Fatalf("payload of %d bytes", len(b))
	}
	g, seq = binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])
	if binary.LittleEndian.Uint32(b[8:]) != g^seq^0x5a5a5a5a {
		t.Fatalf("corrupt payload %x", b)
	}
	return g, seq
}

// Story: huge linger and size limits; nothing may be emitted before Stop, and Stop must
// deliver all 25 exactly once (the lost-final-batch bug dropped them).
func TestStoryLostFinalBatch(t *testing.T) {
	p := newKafkaProducer(t, BatchConfig{MaxMessages: 100_000, MaxBytes: 32 << 20, Linger: time.Hour, CapacityMessages: 100_000}, 0)
	for i := uint32(0); i < 25; i++ {
		if err := p.Produce(Message{Payload: encode(0, i), Offset: Offset{uint64(i), 0}, HasOffset: true}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	st, err := p.buf.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(p.deliveredCopy()); got != 0 || st.Batches != 0 {
		t.Fatalf("emitted before Stop: delivered %d, batches %d", got, st.Batches)
	}
	if st.QueuedMessages != 25 {
		t.Fatalf("queued %d, want 25", st.QueuedMessages)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := p.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := p.deliveredCopy()
	if len(d) != 25 || r.Delivered != 25 || r.Accepted != 25 || len(r.HandedBack) != 0 || r.TimedOut {
		t.Fatalf("delivered %d, report %+v", len(d), r)
	}
	for i, m := range d {
		if g, seq := decode(t, m.Payload); g != 0 || seq != uint32(i) || m.Offset.Tx != uint64(i) || !m.HasOffset {
			t.Fatalf("message %d is %d/%d %+v", i, g, seq, m.Offset)
		}
	}
	if p.triggers[TriggerStop] == 0 || len(p.triggers) != 1 {
		t.Fatalf("triggers %v, want only stop", p.triggers)
	}
	// After Stop: a publish is refused loudly, with the message handed back.
	err = p.buf.TryPush(Message{Payload: []byte("late")})
	var pe *PushError
	if !errors.As(err, &pe) || !errors.Is(err, ErrClosed) || string(pe.Message.Payload) != "late" {
		t.Fatalf("push after stop: %v", err)
	}
}

// Story: 8 goroutines × 100 000 messages, Stop in the middle. Every accepted message is
// delivered or handed back exactly once, per-goroutine order kept.
func TestStoryStopInTheMiddle(t *testing.T) {
	const goroutines = 8
	perG := 100_000
	if testing.Short() || os.Getenv("TIDEMARK_GO_SMALL") != "" {
		perG = 10_000
	}
	// A slightly slow sink and a short grace, so that the stop usually hands something back.
	p := newKafkaProducer(t, BatchConfig{MaxMessages: 512, Linger: 2 * time.Millisecond, CapacityMessages: 65536, MaxInflightBatches: 2}, 500*time.Microsecond)
	var total atomic.Int64
	accepted := make([]int, goroutines)
	refusals := make([]error, goroutines)
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			seq := 0
			if g%2 == 0 { // half the producers push one at a time
				for ; seq < perG; seq++ {
					if err := p.Produce(Message{Payload: encode(uint32(g), uint32(seq))}); err != nil {
						refusals[g] = err
						break
					}
					total.Add(1)
				}
			} else { // the other half in chunks of 64
				chunk := make([]Message, 0, 64)
				for seq < perG {
					chunk = chunk[:0]
					for i := seq; i < perG && len(chunk) < 64; i++ {
						chunk = append(chunk, Message{Payload: encode(uint32(g), uint32(i))})
					}
					n, err := p.buf.PushMany(chunk)
					seq += n
					total.Add(int64(n))
					if err != nil {
						var pe *PushManyError
						if !errors.As(err, &pe) || len(pe.Rest) != len(chunk)-n {
							t.Errorf("PushMany error %v does not hand back the rest", err)
						}
						if errors.Is(err, ErrFull) {
							runtime.Gosched()
							continue
						}
						refusals[g] = err
						break
					}
				}
			}
			accepted[g] = seq
		}(g)
	}
	for total.Load() < int64(goroutines*perG/2) {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	r, err := p.Close(ctx)
	if err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	sum := 0
	for g := 0; g < goroutines; g++ {
		sum += accepted[g]
		if accepted[g] == perG {
			continue // finished before the stop
		}
		if !errors.Is(refusals[g], ErrStopping) && !errors.Is(refusals[g], ErrClosed) {
			t.Errorf("goroutine %d stopped by %v", g, refusals[g])
		}
	}
	if sum == goroutines*perG {
		t.Log("note: every producer finished before the stop took effect")
	}
	d := p.deliveredCopy()
	t.Logf("accepted %d, delivered %d, handed back %d (outcome unknown %d), timed out %v, sink ack errors %d",
		sum, len(d), len(r.HandedBack), r.InFlightUnknown, r.TimedOut, p.ackErrs)
	if r.Accepted != uint64(sum) {
		t.Fatalf("report accepted %d, producers counted %d", r.Accepted, sum)
	}
	if uint64(len(d)) != r.Delivered || r.Failed != 0 || r.Delivered+uint64(len(r.HandedBack)) != r.Accepted {
		t.Fatalf("does not balance: delivered %d/%d, handed back %d, accepted %d", len(d), r.Delivered, len(r.HandedBack), r.Accepted)
	}
	seen := make([][]bool, goroutines)
	for g := range seen {
		seen[g] = make([]bool, accepted[g])
	}
	check := func(what string, ms []Message) {
		last := make([]int64, goroutines)
		for i := range last {
			last[i] = -1
		}
		for _, m := range ms {
			g, seq := decode(t, m.Payload)
			if int(g) >= goroutines || int(seq) >= accepted[g] {
				t.Fatalf("%s: message %d/%d was never accepted", what, g, seq)
			}
			if seen[g][seq] {
				t.Fatalf("%s: duplicate %d/%d", what, g, seq)
			}
			seen[g][seq] = true
			if int64(seq) <= last[g] {
				t.Fatalf("%s: goroutine %d out of order: %d after %d", what, g, seq, last[g])
			}
			last[g] = int64(seq)
		}
	}
	check("delivered", d)
	hb := make([]Message, len(r.HandedBack))
	for i, h := range r.HandedBack {
		hb[i] = h.Message
	}
	check("handed back", hb)
	for g := range seen {
		for seq, ok := range seen[g] {
			if !ok {
				t.Fatalf("message %d/%d accepted but neither delivered nor handed back", g, seq)
			}
		}
	}
}

// A producer whose shutdown path is a context cancel drains exactly like Stop.
func TestProducerContextCancelDrains(t *testing.T) {
	p := newKafkaProducer(t, BatchConfig{MaxMessages: 64, Linger: time.Hour}, 0)
	ctx, cancel := context.WithCancel(context.Background())
	type result struct {
		r   *StopReport
		err error
	}
	done := make(chan result, 1)
	go func() { // the service's shutdown hook
		<-ctx.Done()
		grace, cancelGrace := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancelGrace()
		r, err := p.Close(grace)
		done <- result{r, err}
	}()
	const n = 1000
	for i := uint32(0); i < n; i++ {
		if err := p.Produce(Message{Payload: encode(1, i)}); err != nil {
			t.Fatal(err)
		}
	}
	cancel()
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	d := p.deliveredCopy()
	if len(d) != n || res.r.Delivered != n || len(res.r.HandedBack) != 0 || res.r.Accepted != n {
		t.Fatalf("delivered %d, report %+v", len(d), res.r)
	}
	for i, m := range d {
		if _, seq := decode(t, m.Payload); seq != uint32(i) {
			t.Fatalf("order: %d at %d", seq, i)
		}
	}
}

// A Stop whose context is already cancelled, with no sink at all, still returns a complete
// report: everything handed back, nothing stranded.
func TestStopCancelledContextHandsEverythingBack(t *testing.T) {
	b, err := NewBatchBuffer(BatchConfig{MaxMessages: 8, Linger: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := uint32(0); i < 20; i++ {
		if err := b.TryPush(Message{Payload: encode(2, i)}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := b.Stop(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Accepted != 20 || len(r.HandedBack) != 20 || r.Delivered != 0 {
		t.Fatalf("report %+v", r)
	}
	for i, h := range r.HandedBack {
		if _, seq := decode(t, h.Payload); seq != uint32(i) {
			t.Fatalf("hand-back order: %d at %d", seq, i)
		}
	}
	// A second stop gets the same report.
	r2, err := b.Stop(context.Background())
	if err != nil || r2.Accepted != 20 || len(r2.HandedBack) != 20 {
		t.Fatalf("second stop: %+v %v", r2, err)
	}
}

// Stop cancelled while a sink holds a batch: the grace is cut short, the held batch comes
// back as outcome-unknown, and a late ack is refused.
func TestStopCancelledMidGrace(t *testing.T) {
	b, err := NewBatchBuffer(BatchConfig{MaxMessages: 4, Linger: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := uint32(0); i < 10; i++ {
		if err := b.TryPush(Message{Payload: encode(3, i)}); err != nil {
			t.Fatal(err)
		}
	}
	bt, err := b.NextBatch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(30*time.Millisecond, cancel)
	start := time.Now()
	r, err := b.Stop(ctx) // no deadline: only the cancel ends the grace
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatal("cancel did not cut the grace short")
	}
	if !r.TimedOut || r.Accepted != 10 || len(r.HandedBack) != 10 || r.InFlightUnknown != uint64(len(bt.Messages)) {
		t.Fatalf("report %+v (held batch of %d)", r, len(bt.Messages))
	}
	if err := b.Ack(bt); !errors.Is(err, ErrNotInFlight) {
		t.Fatalf("late ack: %v", err)
	}
}
