package tidemark

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Message is a payload with an optional log offset.
type Message struct {
	Payload   []byte
	Offset    Offset // valid when HasOffset
	HasOffset bool
}

// Trigger says why a batch was emitted.
type Trigger uint32

const (
	TriggerCount  Trigger = C.TIDEMARK_TRIGGER_COUNT
	TriggerBytes  Trigger = C.TIDEMARK_TRIGGER_BYTES
	TriggerLinger Trigger = C.TIDEMARK_TRIGGER_LINGER
	TriggerFlush  Trigger = C.TIDEMARK_TRIGGER_FLUSH
	TriggerStop   Trigger = C.TIDEMARK_TRIGGER_STOP
)

// String is the trigger's name ("count", "bytes", "linger", "flush", "stop"), or "Trigger(n)"
// for a value the ABI does not define.
func (t Trigger) String() string {
	switch t {
	case TriggerCount:
		return "count"
	case TriggerBytes:
		return "bytes"
	case TriggerLinger:
		return "linger"
	case TriggerFlush:
		return "flush"
	case TriggerStop:
		return "stop"
	}
	return "Trigger(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// BatchConfig configures NewBatchBuffer. Zero fields take the library defaults: 512 messages
// / 1 MiB / 5 ms linger per batch, 65 536 messages and 64 MiB held, 4 batches in flight.
type BatchConfig struct {
	MaxMessages        int           // count trigger
	MaxBytes           uint64        // bytes trigger (one larger message goes alone)
	Linger             time.Duration // age of a batch's first message that emits it (µs resolution)
	CapacityMessages   int           // accepted messages held at most (≥ MaxMessages, ≤ 4 194 304)
	CapacityBytes      uint64        // payload bytes held at most (≥ MaxBytes)
	MaxInflightBatches int           // batches handed out and not yet acked or nacked
	// LinkTracker, when set: acked batches report their highest offset to it as
	// Flushed(LinkWriter, …). The buffer keeps its own reference to the native tracker.
	LinkTracker *Tracker
	LinkWriter  WriterID
}

// BatchBuffer takes messages from many goroutines (TryPush, PushMany, Push) and hands them in
// batches to one sink (NextBatch, then Ack or Nack). Stop closes admission, drains, and hands
// back whatever the sink did not ack. Create with NewBatchBuffer; Stop, then Close.
//
// The handle guard is the Tracker's (see there): RLock per call, Lock in Close; blocking calls
// hold the read lock for short slices only.
type BatchBuffer struct {
	mu          sync.RWMutex
	ptr         *C.tidemark_batch_buffer // nil after Close
	stopCalled  atomic.Bool
	finalReport *StopReport // set by Close (under mu)
}

// NewBatchBuffer creates a batch buffer.
func NewBatchBuffer(cfg BatchConfig) (*BatchBuffer, error) {
	var c C.tidemark_batch_config
	if err := statusErr(Status(C.tidemark_batch_config_default(&c))); err != nil {
		return nil, err
	}
	if cfg.MaxMessages < 0 || cfg.CapacityMessages < 0 || cfg.MaxInflightBatches < 0 || cfg.Linger < 0 {
		return nil, ErrInvalidArgument
	}
	if cfg.MaxMessages > 0 {
		c.max_messages = C.size_t(cfg.MaxMessages)
	}
	if cfg.MaxBytes > 0 {
		c.max_bytes = C.uint64_t(cfg.MaxBytes)
	}
	if cfg.Linger > 0 {
		us := (cfg.Linger + time.Microsecond - 1) / time.Microsecond
		c.linger_us = C.uint64_t(us)
	}
	if cfg.CapacityMessages > 0 {
		c.capacity_messages = C.size_t(cfg.CapacityMessages)
	}
	if cfg.CapacityBytes > 0 {
		c.capacity_bytes = C.uint64_t(cfg.CapacityBytes)
	}
	if cfg.MaxInflightBatches > 0 {
		c.max_inflight_batches = C.size_t(cfg.MaxInflightBatches)
	}
	var out *C.tidemark_batch_buffer
	var s Status
	if cfg.LinkTracker != nil {
		tp, err := cfg.LinkTracker.acquire()
		if err != nil {
			return nil, err
		}
		c.link_tracker = tp
		c.link_writer = C.tidemark_writer_id(cfg.LinkWriter)
		s = Status(C.tidemark_batch_buffer_new(&c, &out))
		cfg.LinkTracker.release()
	} else {
		s = Status(C.tidemark_batch_buffer_new(&c, &out))
	}
	if s != StatusOK {
		return nil, statusErr(s)
	}
	b := &BatchBuffer{ptr: out}
	// Backstop only. The C free of a buffer that was never stopped hands its messages to
	// nobody and warns on stderr: Stop (or Close, which stops) is the way.
	runtime.SetFinalizer(b, (*BatchBuffer).finalize)
	return b, nil
}

func (b *BatchBuffer) finalize() {
	if b.ptr != nil {
		C.tidemark_batch_buffer_free(b.ptr)
		b.ptr = nil
	}
}

func (b *BatchBuffer) acquire() (*C.tidemark_batch_buffer, error) {
	if b == nil {
		return nil, ErrClosed
	}
	b.mu.RLock()
	if b.ptr == nil {
		b.mu.RUnlock()
		return nil, ErrClosed
	}
	return b.ptr, nil
}

func (b *BatchBuffer) release() {
	b.mu.RUnlock()
	runtime.KeepAlive(b)
}

// TryPush offers a copy of m without blocking. On refusal (ErrFull: retry later;
// ErrStopping; ErrClosed; ErrTooLarge) the error is a *PushError holding m: nothing is
// dropped silently. The payload is copied during the call; the caller keeps it.
func (b *BatchBuffer) TryPush(m Message) error {
	p, err := b.acquire()
	if err != nil {
		return &PushError{Message: m, Err: err}
	}
	var dp *C.uint8_t
	if len(m.Payload) > 0 {
		dp = (*C.uint8_t)(unsafe.Pointer(&m.Payload[0]))
	}
	s := Status(C.tm_try_push(p, dp, C.size_t(len(m.Payload)), C.uint64_t(m.Offset.Tx), C.uint64_t(m.Offset.Op), boolInt(m.HasOffset)))
	b.release()
	runtime.KeepAlive(m.Payload)
	if s != StatusOK {
		return &PushError{Message: m, Err: statusErr(s)}
	}
	return nil
}

// Push is TryPush that waits while the buffer is full, until ctx ends (then a *PushError
// with ErrFull, or ctx's error if it was already done).
func (b *BatchBuffer) Push(ctx context.Context, m Message) error {
	var dp *C.uint8_t
	if len(m.Payload) > 0 {
		dp = (*C.uint8_t)(unsafe.Pointer(&m.Payload[0]))
	}
	for {
		slice := sliceFor(ctx)
		p, err := b.acquire()
		if err != nil {
			return &PushError{Message: m, Err: err}
		}
		s := Status(C.tm_push_timeout(p, dp, C.size_t(len(m.Payload)), C.uint64_t(m.Offset.Tx), C.uint64_t(m.Offset.Op), boolInt(m.HasOffset), C.uint64_t(slice)))
		b.release()
		runtime.KeepAlive(m.Payload)
		if s == StatusOK {
			return nil
		}
		if s != StatusFull || ctx.Err() != nil {
			return &PushError{Message: m, Err: statusErr(s)}
		}
	}
}

// pushScratch is what a PushMany call hands to tidemark_batch_buffer_push_packed: the
// payloads packed back to back into one pointer-free Go buffer plus one descriptor per message
// (cgo forbids passing Go memory that holds Go pointers, such as an array of tidemark_message
// pointing into Go slices), and the call's two out-parameters. Pooled: a PushMany allocates
// nothing in the steady state (the out-parameters live in this heap object, so passing their
// addresses to C makes nothing escape).
type pushScratch struct {
	bytes    []byte
	descs    []C.tidemark_msg_desc
	accepted C.size_t
	refusal  C.tidemark_status
}

var pushPool = sync.Pool{New: func() any { return new(pushScratch) }}

// Larger scratch arrays than these are dropped instead of pooled (a rare huge call must not
// pin its memory for later small ones).
const (
	maxPooledScratch = 4 << 20 // payload bytes
	maxPooledDescs   = 1 << 16 // descriptors (32 B each)
)

// pack fills sc with msgs: the payloads back to back in sc.bytes, one descriptor per message
// in sc.descs[:len(msgs)]. It returns the payload pointer for C (nil when there are no payload
// bytes) and the byte count.
func (sc *pushScratch) pack(msgs []Message) (*C.uint8_t, int) {
	total := 0
	for i := range msgs {
		total += len(msgs[i].Payload)
	}
	if cap(sc.bytes) < total {
		sc.bytes = make([]byte, total)
	}
	if cap(sc.descs) < len(msgs) {
		sc.descs = make([]C.tidemark_msg_desc, len(msgs))
	}
	bytes := sc.bytes[:total]
	descs := sc.descs[:len(msgs)]
	off := 0
	for i := range msgs {
		m := &msgs[i]
		// copy is bounded by bytes: a payload resized concurrently (a caller's data race)
		// cannot overrun it; the library then refuses the call (the lengths do not add up).
		off += copy(bytes[off:], m.Payload)
		descs[i] = C.tidemark_msg_desc{
			len:        C.uint64_t(len(m.Payload)),
			offset:     C.tidemark_offset{tx: C.uint64_t(m.Offset.Tx), op: C.uint64_t(m.Offset.Op)},
			has_offset: C.bool(m.HasOffset),
		}
	}
	if total == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&bytes[0])), total
}

func putScratch(sc *pushScratch) {
	if cap(sc.bytes) > maxPooledScratch {
		sc.bytes = nil
	}
	if cap(sc.descs) > maxPooledDescs {
		sc.descs = nil
	}
	pushPool.Put(sc)
}

// PushMany offers copies of msgs in one call, never blocking: the longest prefix that fits is
// accepted. It returns how many were accepted; when that is fewer than len(msgs) the error is a
// *PushManyError whose Rest holds the refused messages, in order (errors.Is(err, ErrFull)
// etc.). Empty or nil msgs: ErrEmptyBatch. The payloads are copied before PushMany returns
// (packed into a pooled Go buffer, then by the library into its own arena, one crossing for
// the whole call): the caller keeps msgs and may reuse them at once, whatever the outcome.
// Empty payloads are valid messages.
func (b *BatchBuffer) PushMany(msgs []Message) (int, error) {
	n := len(msgs)
	if n == 0 {
		return 0, ErrEmptyBatch
	}
	sc := pushPool.Get().(*pushScratch)
	bp, total := sc.pack(msgs)
	p, err := b.acquire()
	if err != nil {
		putScratch(sc)
		return 0, &PushManyError{Accepted: 0, Rest: msgs, Err: err}
	}
	s := Status(C.tidemark_batch_buffer_push_packed(p, bp, C.size_t(total), &sc.descs[0], C.size_t(n), &sc.accepted, &sc.refusal))
	b.release()
	accepted, refusal := int(sc.accepted), Status(sc.refusal)
	putScratch(sc)
	if s != StatusOK {
		return 0, &PushManyError{Accepted: 0, Rest: msgs, Err: statusErr(s)}
	}
	if accepted < n {
		return accepted, &PushManyError{Accepted: accepted, Rest: msgs[accepted:], Err: statusErr(refusal)}
	}
	return n, nil
}

// Batch is a batch taken by the sink. Give it back exactly once with Ack or Nack; a batch
// that is never given back has its native handle released by a finalizer (a backstop) and is
// handed back by the stop as outcome-unknown.
//
// Lifetimes. From NextBatch: everything is ordinary Go memory owned by the caller (the
// payloads are sub-slices of one buffer allocated for this batch) and stays valid after Ack or
// Nack, for as long as the caller keeps it. From NextBatchInto: Messages and every Payload
// belong to the Batch value and are overwritten by the next NextBatchInto into it; see there.
// No Batch ever points into native memory.
type Batch struct {
	ID            uint64
	Messages      []Message
	Bytes         uint64
	HighestOffset Offset // valid when HasOffset
	HasOffset     bool
	Trigger       Trigger

	buf *BatchBuffer
	h   batchHandle // NextBatch's batches: nil once acked, nacked or released

	// NextBatchInto's state, reused from one batch to the next: the handle (in its own small
	// allocation, which carries the finalizer, so a Batch may live anywhere: a field, an
	// array element, a local), the payload buffer and the Messages array.
	box     *batchHandle
	payload []byte
	msgBuf  []Message
}

// batchHandle holds a batch's C handle and hands it out once. (atomic.Pointer cannot hold a
// cgo incomplete struct type since Go 1.20, so the pointer is kept as an unsafe.Pointer.)
type batchHandle struct{ p unsafe.Pointer }

func (h *batchHandle) Store(b *C.tidemark_batch) { atomic.StorePointer(&h.p, unsafe.Pointer(b)) }

func (h *batchHandle) Load() *C.tidemark_batch {
	return (*C.tidemark_batch)(atomic.LoadPointer(&h.p))
}

func (h *batchHandle) Swap(b *C.tidemark_batch) *C.tidemark_batch {
	return (*C.tidemark_batch)(atomic.SwapPointer(&h.p, unsafe.Pointer(b)))
}

// finalize releases a handle nobody gave back (the batch stays in flight; the stop hands it
// back as outcome-unknown). A no-op once the handle was acked, nacked or released.
func (h *batchHandle) finalize() {
	if p := h.Swap(nil); p != nil {
		C.tidemark_batch_free(p)
		batchesFinalized.Add(1)
	}
}

// batchesFinalized counts handles released by a finalizer (read by the tests).
var batchesFinalized atomic.Int64

func (bt *Batch) finalize() { bt.h.finalize() }

// inFlight reports whether bt holds a native handle (taken, not yet acked or nacked).
func (bt *Batch) inFlight() bool {
	return bt.h.Load() != nil || (bt.box != nil && bt.box.Load() != nil)
}

// Ack is bt's buffer's Ack(bt).
func (bt *Batch) Ack() error {
	if bt == nil {
		return ErrNilBatch
	}
	if bt.buf == nil {
		return ErrBatchDone // the zero Batch: never taken
	}
	return bt.buf.Ack(bt)
}

// Nack is bt's buffer's Nack(bt, requeue).
func (bt *Batch) Nack(requeue bool) error {
	if bt == nil {
		return ErrNilBatch
	}
	if bt.buf == nil {
		return ErrBatchDone
	}
	return bt.buf.Nack(bt, requeue)
}

// take waits for the next batch until ctx ends: the loop NextBatch and NextBatchInto share.
// On success the caller owns r.batch and r.view points into it.
func (b *BatchBuffer) take(ctx context.Context) (r C.tm_next_result, err error) {
	for {
		if err := ctx.Err(); err != nil {
			return r, err
		}
		slice := sliceFor(ctx)
		p, err := b.acquire()
		if err != nil {
			return r, err
		}
		r = C.tm_next_batch(p, C.uint64_t(slice)) // by value: nothing escapes
		b.release()
		switch s := Status(r.status); s {
		case StatusOK:
			return r, nil
		case StatusTimeout:
		default:
			return r, statusErr(s)
		}
	}
}

// viewPayload is the batch's payload bytes in native memory (valid while r.batch is held).
func viewPayload(r *C.tm_next_result) []byte {
	if r.view.payload_len == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(r.view.payload)), int(r.view.payload_len))
}

// fill sets bt from a taken batch: the summary, and Messages built in msgs (len(msgs) ==
// view.len) over payload (the caller's copy of the view's bytes). The descriptors are read in
// native memory. False if the view does not add up (a library bug; nothing is left in bt).
func (bt *Batch) fill(b *BatchBuffer, r *C.tm_next_result, payload []byte, msgs []Message) bool {
	descs := unsafe.Slice((*C.tidemark_msg_desc)(unsafe.Pointer(r.view.descs)), len(msgs))
	off := 0
	for i := range descs {
		d := &descs[i]
		l := int(d.len)
		if d.len > C.uint64_t(len(payload)-off) {
			return false
		}
		msgs[i] = Message{
			Payload:   payload[off : off+l : off+l],
			Offset:    Offset{uint64(d.offset.tx), uint64(d.offset.op)},
			HasOffset: bool(d.has_offset),
		}
		off += l
	}
	if off != len(payload) || uint64(r.summary.len) != uint64(len(msgs)) {
		return false
	}
	sum := &r.summary
	bt.ID = uint64(sum.id)
	bt.Messages = msgs
	bt.Bytes = uint64(sum.bytes)
	bt.HighestOffset = Offset{uint64(sum.highest_offset.tx), uint64(sum.highest_offset.op)}
	bt.HasOffset = bool(sum.has_offset)
	bt.Trigger = Trigger(sum.trigger)
	bt.buf = b
	return true
}

// requeue gives back a batch that could not be delivered to Go (its view did not add up).
func (b *BatchBuffer) requeue(h *C.tidemark_batch) {
	p, err := b.acquire()
	if err != nil {
		C.tidemark_batch_free(h)
		return
	}
	if s := Status(C.tidemark_batch_buffer_nack(p, h, true)); s == StatusNullArgument || s == StatusInvalidHandle {
		C.tidemark_batch_free(h)
	}
	b.release()
}

// NextBatch waits for the next batch until ctx ends (then ctx's error). ErrClosed once the
// buffer is stopped and drained (nothing more will come) or the handle is closed.
//
// The batch is copied into Go memory once: its payloads, which the library keeps back to
// back, go into one new []byte, and each Message's Payload is a sub-slice of it (capacity
// capped at its length, so an append never runs into the next message). Three allocations per
// batch (that buffer, the Messages array, the Batch). The result is the caller's: it stays
// valid after Ack or Nack, and after the buffer is stopped or closed. NextBatchInto reuses a
// Batch instead.
func (b *BatchBuffer) NextBatch(ctx context.Context) (*Batch, error) {
	r, err := b.take(ctx)
	if err != nil {
		return nil, err
	}
	payload := []byte{} // empty payloads stay non-nil, as they always were
	if src := viewPayload(&r); src != nil {
		payload = append([]byte(nil), src...) // allocates without zeroing: one write per byte
	}
	bt := &Batch{}
	if !bt.fill(b, &r, payload, make([]Message, int(r.view.len))) {
		b.requeue(r.batch)
		return nil, ErrPanic
	}
	bt.h.Store(r.batch)
	runtime.SetFinalizer(bt, (*Batch).finalize)
	return bt, nil
}

// NextBatchInto is NextBatch into a Batch the caller keeps and passes again: after the first
// few batches (once its buffers are as large as the batches need) it allocates nothing. The
// payloads are copied once into a buffer dst owns; dst.Messages is an array dst owns, each
// Payload a sub-slice of that buffer.
//
// Lifetime: dst's Messages, their Payload bytes and the summary fields are valid from when
// NextBatchInto returns nil until the next NextBatchInto into dst is called — Ack and Nack do
// not touch them, so they may be read after the batch is given back. The next call that
// succeeds overwrites them in place (the same arrays); one that returns an error leaves them
// as they were. Copy anything needed longer (or use NextBatch). dst must be given back
// (dst.Ack, dst.Nack) before it is passed again: while it holds a batch, NextBatchInto returns
// ErrBatchInFlight and takes nothing. The zero Batch is ready to use; a Batch from NextBatch
// may be passed once it is given back (NextBatchInto never writes into the memory NextBatch
// handed out). One goroutine at a time uses dst, and dst is not copied by value (copies would
// share its handle and buffers). dst keeps the largest buffers it needed.
//
// dst may live anywhere (a local, a struct field, an array element). If it is dropped while
// holding a batch, a finalizer releases the native handle and the stop hands the batch back
// as outcome-unknown, as for NextBatch.
func (b *BatchBuffer) NextBatchInto(ctx context.Context, dst *Batch) error {
	if dst == nil {
		return ErrNilBatch
	}
	if dst.inFlight() {
		return ErrBatchInFlight
	}
	r, err := b.take(ctx)
	if err != nil {
		return err
	}
	n, nb := int(r.view.len), int(r.view.payload_len)
	if cap(dst.payload) < nb || dst.payload == nil {
		dst.payload = make([]byte, nb)
	}
	payload := dst.payload[:nb]
	copy(payload, viewPayload(&r))
	if cap(dst.msgBuf) < n {
		dst.msgBuf = make([]Message, n)
	}
	if !dst.fill(b, &r, payload, dst.msgBuf[:n]) {
		b.requeue(r.batch)
		return ErrPanic
	}
	if dst.box == nil {
		dst.box = new(batchHandle)
		runtime.SetFinalizer(dst.box, (*batchHandle).finalize)
	}
	dst.box.Store(r.batch)
	return nil
}

// Ack acknowledges a delivered batch. ErrLinkFailed: delivered, but the linked tracker
// refused the report. ErrNotInFlight: another buffer's batch, or already handed back by a
// stop whose deadline passed. ErrBatchDone: already acked or nacked.
func (b *BatchBuffer) Ack(bt *Batch) error { return b.giveBack(bt, false, false) }

// Nack gives a batch back: with requeue its messages return ahead of newer ones, in order;
// without, they are counted failed.
func (b *BatchBuffer) Nack(bt *Batch, requeue bool) error { return b.giveBack(bt, true, requeue) }

func (b *BatchBuffer) giveBack(bt *Batch, nack, requeue bool) error {
	if bt == nil {
		return ErrNilBatch
	}
	var h *C.tidemark_batch
	if bt.box != nil {
		h = bt.box.Swap(nil) // NextBatchInto's: the box keeps its finalizer for the next batch
	}
	if h == nil {
		if h = bt.h.Swap(nil); h == nil {
			return ErrBatchDone
		}
		runtime.SetFinalizer(bt, nil) // NextBatch's: the Batch is ours, allocated whole
	}
	p, err := b.acquire()
	if err != nil {
		// The buffer handle is gone: nothing can take the batch back; release the handle.
		C.tidemark_batch_free(h)
		return err
	}
	var s Status
	if nack {
		s = Status(C.tidemark_batch_buffer_nack(p, h, C.bool(requeue)))
	} else {
		s = Status(C.tidemark_batch_buffer_ack(p, h))
	}
	b.release()
	if s == StatusNullArgument || s == StatusInvalidHandle {
		// The only outcomes that leave the batch handle unconsumed.
		C.tidemark_batch_free(h)
	}
	return statusErr(s)
}

// Flush emits everything buffered now (ignoring linger) and waits until all of it is acked or
// failed, or ctx ends (ctx's error). ErrClosed if the buffer stopped meanwhile. Needs the sink
// running on another goroutine.
func (b *BatchBuffer) Flush(ctx context.Context) error {
	for {
		slice := sliceFor(ctx)
		p, err := b.acquire()
		if err != nil {
			return err
		}
		s := Status(C.tidemark_batch_buffer_flush(p, C.uint64_t(slice)))
		b.release()
		switch s {
		case StatusOK:
			return nil
		case StatusTimeout:
			if err := ctx.Err(); err != nil {
				return err
			}
		default:
			return statusErr(s)
		}
	}
}

// HandedBack is a message a stop handed back.
type HandedBack struct {
	Message
	// OutcomeUnknown: its batch was still in flight at the deadline; the sink may have stored it.
	OutcomeUnknown bool
}

// StopReport is the outcome of a stop. The counts balance:
// Accepted == Delivered + Failed + uint64(len(HandedBack)).
type StopReport struct {
	Accepted        uint64
	Delivered       uint64
	Failed          uint64
	InFlightUnknown uint64 // of the handed-back messages, those whose outcome is unknown
	UnknownBatches  uint64
	TimedOut        bool // the deadline passed before everything was resolved
	HandedBack      []HandedBack
}

// maxGrace stands for "no deadline" (a year): the C call adds it to the current instant.
const maxGrace = 365 * 24 * time.Hour

// Stop closes admission at once, emits everything queued, gives batches in flight until ctx's
// deadline (no deadline: unbounded) to be acked, then hands back the rest in the report. If
// ctx is cancelled meanwhile (or was already), the stop's deadline moves to now: the report
// still comes back complete, with whatever was unresolved handed back (TimedOut set) —
// cancellation never strands messages. Concurrent and repeated stops get the same report.
// Delivery needs the sink running on another goroutine: with no sink and no deadline, Stop
// waits until ctx is cancelled.
// After Close: the report Close made (if any) with ErrClosed.
func (b *BatchBuffer) Stop(ctx context.Context) (*StopReport, error) {
	b.stopCalled.Store(true)
	grace := maxGrace
	if dl, ok := ctx.Deadline(); ok {
		grace = time.Until(dl)
	}
	if ctx.Err() != nil || grace < 0 {
		grace = 0
	}
	if err := b.beginStop(grace); err != nil {
		return b.closedReport(err)
	}
	cancelled := grace == 0
	wait := 50 * time.Microsecond
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		p, err := b.acquire()
		if err != nil {
			return b.closedReport(err)
		}
		var rep *C.tidemark_stop_report
		s := Status(C.tidemark_batch_buffer_poll_stop(p, &rep))
		b.release()
		if s == StatusOK {
			r, err := readReport(rep)
			C.tidemark_stop_report_free(rep)
			return r, err
		}
		if s != StatusWouldBlock {
			return nil, statusErr(s)
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
		if cancelled {
			<-timer.C
		} else {
			select {
			case <-timer.C:
			case <-ctx.Done():
				// Cut the grace short: the earliest deadline wins.
				if err := b.beginStop(0); err != nil {
					return b.closedReport(err)
				}
				cancelled = true
			}
		}
		if wait < 5*time.Millisecond {
			wait *= 2
		}
	}
}

func (b *BatchBuffer) beginStop(grace time.Duration) error {
	p, err := b.acquire()
	if err != nil {
		return err
	}
	s := Status(C.tidemark_batch_buffer_begin_stop(p, C.uint64_t(durationMs(grace))))
	b.release()
	return statusErr(s)
}

func (b *BatchBuffer) closedReport(err error) (*StopReport, error) {
	if b == nil {
		return nil, err
	}
	b.mu.RLock()
	r := b.finalReport
	b.mu.RUnlock()
	return r, err
}

// readReport copies a stop report into Go memory.
func readReport(rep *C.tidemark_stop_report) (*StopReport, error) {
	var c C.tidemark_stop_counts
	if s := Status(C.tidemark_stop_report_counts(rep, &c)); s != StatusOK {
		return nil, statusErr(s)
	}
	r := &StopReport{
		Accepted:        uint64(c.accepted),
		Delivered:       uint64(c.delivered),
		Failed:          uint64(c.failed),
		InFlightUnknown: uint64(c.in_flight_unknown),
		UnknownBatches:  uint64(c.unknown_batches),
		TimedOut:        bool(c.timed_out),
		HandedBack:      make([]HandedBack, 0, int(c.handed_back)),
	}
	if c.handed_back == 0 {
		return r, nil
	}
	const page = 256
	arr := (*C.tidemark_handed_back)(C.malloc(C.size_t(page) * C.sizeof_tidemark_handed_back))
	if arr == nil {
		return nil, ErrBufferTooSmall
	}
	defer C.free(unsafe.Pointer(arr))
	views := unsafe.Slice(arr, page)
	for start := 0; ; {
		var n C.size_t
		if s := Status(C.tidemark_stop_report_handed_back(rep, C.size_t(start), arr, page, &n)); s != StatusOK {
			return nil, statusErr(s)
		}
		if n == 0 {
			break
		}
		total := 0
		for _, v := range views[:n] {
			total += int(v.message.len)
		}
		bytes := make([]byte, total)
		off := 0
		for _, v := range views[:n] {
			l := int(v.message.len)
			if l > 0 {
				copy(bytes[off:off+l], unsafe.Slice((*byte)(unsafe.Pointer(v.message.data)), l))
			}
			r.HandedBack = append(r.HandedBack, HandedBack{
				Message: Message{
					Payload:   bytes[off : off+l : off+l],
					Offset:    Offset{uint64(v.message.offset.tx), uint64(v.message.offset.op)},
					HasOffset: bool(v.message.has_offset),
				},
				OutcomeUnknown: bool(v.outcome_unknown),
			})
			off += l
		}
		start += int(n)
	}
	return r, nil
}

// Close releases the buffer. Idempotent; waits for calls in flight; later calls return
// ErrClosed. A buffer that was never stopped is stopped here with no grace and the result is
// a *NotStoppedError (errors.Is(err, ErrNotStopped)) whose Report holds every message handed
// back: nothing is discarded silently. Call Stop first.
func (b *BatchBuffer) Close() error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ptr == nil {
		return nil
	}
	var rep *C.tidemark_stop_report
	s := Status(C.tidemark_batch_buffer_poll_stop(b.ptr, &rep))
	if s == StatusWouldBlock {
		// Never stopped, or still draining: end it now (the earliest deadline wins). No sink
		// call can run while we hold the lock, so it resolves at this deadline.
		C.tidemark_batch_buffer_begin_stop(b.ptr, 0)
		for i := 0; s == StatusWouldBlock; i++ {
			if i > 0 {
				time.Sleep(50 * time.Microsecond)
			}
			s = Status(C.tidemark_batch_buffer_poll_stop(b.ptr, &rep))
		}
	}
	var err error
	if s == StatusOK {
		r, rerr := readReport(rep)
		C.tidemark_stop_report_free(rep)
		b.finalReport = r
		if rerr != nil {
			err = rerr
		} else if !b.stopCalled.Load() && (r.Accepted > r.Delivered+r.Failed || len(r.HandedBack) > 0) {
			err = &NotStoppedError{Report: r}
		}
	} else {
		err = statusErr(s)
	}
	C.tidemark_batch_buffer_free(b.ptr)
	b.ptr = nil
	runtime.SetFinalizer(b, nil)
	return err
}

// BatchStats are a batch buffer's counters and gauges.
type BatchStats struct {
	Accepted, RejectedFull, RejectedStopping, RejectedClosed, RejectedTooLarge uint64
	Batches, Delivered, Failed, Requeued, HandedBack                           uint64
	QueuedMessages, QueuedBytes, InFlightBatches, InFlightMessages, LinkErrors uint64
}

// Stats returns the buffer's counters and gauges.
func (b *BatchBuffer) Stats() (BatchStats, error) {
	p, err := b.acquire()
	if err != nil {
		return BatchStats{}, err
	}
	var c C.tidemark_batch_buffer_counters
	s := Status(C.tidemark_batch_buffer_stats(p, &c))
	b.release()
	if s != StatusOK {
		return BatchStats{}, statusErr(s)
	}
	return BatchStats{
		Accepted: uint64(c.accepted), RejectedFull: uint64(c.rejected_full),
		RejectedStopping: uint64(c.rejected_stopping), RejectedClosed: uint64(c.rejected_closed),
		RejectedTooLarge: uint64(c.rejected_too_large), Batches: uint64(c.batches),
		Delivered: uint64(c.delivered), Failed: uint64(c.failed), Requeued: uint64(c.requeued),
		HandedBack: uint64(c.handed_back), QueuedMessages: uint64(c.queued_messages),
		QueuedBytes: uint64(c.queued_bytes), InFlightBatches: uint64(c.in_flight_batches),
		InFlightMessages: uint64(c.in_flight_messages), LinkErrors: uint64(c.link_errors),
	}, nil
}

func boolInt(b bool) C.int {
	if b {
		return 1
	}
	return 0
}
