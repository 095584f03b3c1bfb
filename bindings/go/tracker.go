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
	"time"
	"unsafe"
)

// WriterID identifies a registered writer (a generation in the high 32 bits, a slot in the
// low 32): an unregistered id stays refused (ErrUnknownWriter) even after its slot is reused.
type WriterID uint64

// Offset is a position in the source log, ordered by Tx then Op. Same layout as
// tidemark_offset (checked at compile time in cgo.go).
type Offset struct {
	Tx uint64 // the transaction's commit position (an LSN, a Kafka offset)
	Op uint64 // the operation's position inside it
}

// Less reports whether o sorts before p.
func (o Offset) Less(p Offset) bool { return o.Tx < p.Tx || (o.Tx == p.Tx && o.Op < p.Op) }

// DownClass says why a writer went down (see Tracker.Down).
type DownClass uint32

const (
	// DownCrash evicts now (an Evicted event with reason EvictCrashed).
	DownCrash DownClass = C.TIDEMARK_DOWN_CLASS_CRASH
	// DownCleanup unpins now (a Removed event); the id stays registered.
	DownCleanup DownClass = C.TIDEMARK_DOWN_CLASS_CLEANUP
	// DownTeardown keeps pinning but marks the writer orphaned: the first sweep past the grace
	// period evicts it without a challenge (EvictOrphaned).
	DownTeardown DownClass = C.TIDEMARK_DOWN_CLASS_TEARDOWN
)

// String is the class's name ("crash", "cleanup", "teardown"), or "DownClass(n)" for a value
// the ABI does not define.
func (c DownClass) String() string {
	switch c {
	case DownCrash:
		return "crash"
	case DownCleanup:
		return "cleanup"
	case DownTeardown:
		return "teardown"
	}
	return "DownClass(" + strconv.FormatUint(uint64(c), 10) + ")"
}

// EventKind is what an Event reports.
type EventKind uint32

const (
	EventChallenged EventKind = C.TIDEMARK_EVENT_KIND_CHALLENGED // answer with Touch (or a flush) before the next sweep
	EventEvicted    EventKind = C.TIDEMARK_EVENT_KIND_EVICTED    // Reason says why
	EventRemoved    EventKind = C.TIDEMARK_EVENT_KIND_REMOVED    // by Down(w, DownCleanup)
)

// String is the kind's name ("challenged", "evicted", "removed"), or "EventKind(n)" for a
// value the ABI does not define.
func (k EventKind) String() string {
	switch k {
	case EventChallenged:
		return "challenged"
	case EventEvicted:
		return "evicted"
	case EventRemoved:
		return "removed"
	}
	return "EventKind(" + strconv.FormatUint(uint64(k), 10) + ")"
}

// EvictReason says why a writer was evicted.
type EvictReason uint32

const (
	EvictNone     EvictReason = C.TIDEMARK_EVICT_REASON_NONE
	EvictCrashed  EvictReason = C.TIDEMARK_EVICT_REASON_CRASHED
	EvictOrphaned EvictReason = C.TIDEMARK_EVICT_REASON_ORPHANED
	EvictStalled  EvictReason = C.TIDEMARK_EVICT_REASON_STALLED
)

// String is the reason's name ("none", "crashed", "orphaned", "stalled"), or "EvictReason(n)"
// for a value the ABI does not define.
func (r EvictReason) String() string {
	switch r {
	case EvictNone:
		return "none"
	case EvictCrashed:
		return "crashed"
	case EvictOrphaned:
		return "orphaned"
	case EvictStalled:
		return "stalled"
	}
	return "EvictReason(" + strconv.FormatUint(uint64(r), 10) + ")"
}

// Event is a staleness event. Same layout as tidemark_event (checked in cgo.go), so
// TakeEvents fills the caller's slice directly.
type Event struct {
	Kind   EventKind
	Reason EvictReason // for EventEvicted; EvictNone otherwise
	Writer WriterID
}

// WriterState is a writer's state.
type WriterState uint32

const (
	WriterIdle    WriterState = C.TIDEMARK_WRITER_STATE_IDLE
	WriterPending WriterState = C.TIDEMARK_WRITER_STATE_PENDING
	WriterEvicted WriterState = C.TIDEMARK_WRITER_STATE_EVICTED
)

// String is the state's name ("idle", "pending", "evicted"), or "WriterState(n)" for a value
// the ABI does not define.
func (s WriterState) String() string {
	switch s {
	case WriterIdle:
		return "idle"
	case WriterPending:
		return "pending"
	case WriterEvicted:
		return "evicted"
	}
	return "WriterState(" + strconv.FormatUint(uint64(s), 10) + ")"
}

// TrackerOptions configures NewTracker. The zero value means the library defaults: no
// initial ack, no slots allocated up front, at most 2³²−1 writers, a 60 s grace period,
// 65 536 queued events.
type TrackerOptions struct {
	// InitialAck, when HasInitialAck: the ack before the first commit (a position already
	// confirmed upstream); a floor the ack never goes below.
	InitialAck    uint64
	HasInitialAck bool
	// ExpectedWriters: writer slots allocated up front (0: grow on demand).
	ExpectedWriters int
	// MaxWriters: the most writers registered at once (0: the default).
	MaxWriters int
	// StallGrace: the progress timeout for sweeps (0: the default, 60 s).
	StallGrace time.Duration
	// EventCapacity: undelivered events kept (0: the default); evictions are never dropped.
	EventCapacity int
	// Now, when set, is the clock the tracker's calls pass as now_ms (milliseconds, never
	// decreasing) instead of MonotonicMs: tests drive staleness with it (advance a fake clock
	// past StallGrace, then Sweep) without sleeping. It is called from the goroutine making
	// each call, so it must be safe for concurrent use, and must not block. It covers this
	// wrapper's calls only: a BatchBuffer linked to the tracker reports with MonotonicMs, so a
	// fake clock used with a link should start at MonotonicMs() and only move forward.
	// math.MaxUint64 is read as math.MaxUint64-1 (the shim reserves it).
	Now func() uint64
}

// Tracker is a flush tracker: one goroutine commits, any number report flushes, remove,
// sweep, read the ack and take events, concurrently. Create with NewTracker, release with
// Close.
//
// Handle guard. Every call takes mu.RLock, checks ptr, calls C, unlocks; Close takes mu.Lock,
// so it waits for calls in flight and then frees the handle: a call never runs on a freed
// handle, and calls after Close return ErrClosed. An RWMutex rather than a hand-made atomic
// in-use counter: its uncontended read path is the same one atomic add to lock and one to
// unlock (what a counter would cost), and it already solves the hard part — making Close wait
// for readers without spinning, and stopping new readers while Close waits (writer
// preference). Measured in bench_test.go (BenchmarkFlushed/progress vs
// BenchmarkFlushedUnguarded). Blocking calls (WaitAck) hold the read lock only for short
// slices, so Close waits at most one slice.
type Tracker struct {
	mu  sync.RWMutex
	ptr *C.tidemark_tracker // nil after Close
	now func() uint64       // TrackerOptions.Now; nil: the library clock, read on the C side
}

// clock is the now_ms argument for the shim's tracker helpers: C.TM_LIBRARY_CLOCK (the shim
// reads tidemark_monotonic_ms itself, no extra crossing) unless TrackerOptions.Now is set.
func (t *Tracker) clock() C.uint64_t {
	if t == nil || t.now == nil {
		return C.TM_LIBRARY_CLOCK
	}
	v := t.now()
	if v == uint64(C.TM_LIBRARY_CLOCK) {
		v--
	}
	return C.uint64_t(v)
}

// NewTracker creates a tracker.
func NewTracker(opts TrackerOptions) (*Tracker, error) {
	var o C.tidemark_tracker_options
	if err := statusErr(Status(C.tidemark_tracker_options_default(&o))); err != nil {
		return nil, err
	}
	if opts.HasInitialAck {
		o.initial_ack = C.uint64_t(opts.InitialAck)
		o.has_initial_ack = true
	}
	if opts.ExpectedWriters < 0 || opts.MaxWriters < 0 || opts.EventCapacity < 0 || opts.StallGrace < 0 {
		return nil, ErrInvalidArgument
	}
	if opts.ExpectedWriters > 0 {
		o.expected_writers = C.size_t(opts.ExpectedWriters)
	}
	if opts.MaxWriters > 0 {
		o.max_writers = C.size_t(opts.MaxWriters)
	}
	if opts.StallGrace > 0 {
		o.stall_grace_ms = C.uint64_t(durationMs(opts.StallGrace))
	}
	if opts.EventCapacity > 0 {
		o.event_capacity = C.size_t(opts.EventCapacity)
	}
	var p *C.tidemark_tracker
	if err := statusErr(Status(C.tidemark_tracker_new(&o, &p))); err != nil {
		return nil, err
	}
	t := &Tracker{ptr: p, now: opts.Now}
	// Backstop only: Close is the way to release a tracker.
	runtime.SetFinalizer(t, (*Tracker).finalize)
	return t, nil
}

func (t *Tracker) finalize() {
	if t.ptr != nil {
		C.tidemark_tracker_free(t.ptr)
		t.ptr = nil
	}
}

// Close releases the tracker. Idempotent; waits for calls in flight; later calls return
// ErrClosed. A BatchBuffer linked to it keeps the native tracker alive on its own.
func (t *Tracker) Close() error {
	if t == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ptr != nil {
		C.tidemark_tracker_free(t.ptr)
		t.ptr = nil
		runtime.SetFinalizer(t, nil)
	}
	return nil
}

// acquire returns the live handle under the read lock; release must follow the C call.
func (t *Tracker) acquire() (*C.tidemark_tracker, error) {
	if t == nil {
		return nil, ErrClosed
	}
	t.mu.RLock()
	if t.ptr == nil {
		t.mu.RUnlock()
		return nil, ErrClosed
	}
	return t.ptr, nil
}

// release ends a call begun by acquire: it runs after the C call, and its KeepAlive keeps
// the wrapper (whose finalizer would free the handle) reachable until then.
func (t *Tracker) release() {
	t.mu.RUnlock()
	runtime.KeepAlive(t)
}

// Register registers a new writer. ErrCapacity past MaxWriters.
func (t *Tracker) Register() (WriterID, error) {
	p, err := t.acquire()
	if err != nil {
		return 0, err
	}
	r := C.tm_register(p) // by value: no out-parameter to allocate
	t.release()
	if s := Status(r.status); s != StatusOK {
		return 0, statusErr(s)
	}
	return WriterID(r.value), nil
}

// Unregister releases a writer's slot (pending or evicted included: what it owed stops
// pinning). The id becomes stale: later calls with it return ErrUnknownWriter.
func (t *Tracker) Unregister(w WriterID) error {
	p, err := t.acquire()
	if err != nil {
		return err
	}
	s := Status(C.tm_unregister(p, C.tidemark_writer_id(w)))
	t.release()
	return statusErr(s)
}

// Remove removes a writer on purpose: what it owes stops pinning the ack. The id stays
// registered. No event is queued (the caller knows); a removal that other parts of the host
// must hear about goes through Down(w, DownCleanup), which queues an EventRemoved.
func (t *Tracker) Remove(w WriterID) error {
	p, err := t.acquire()
	if err != nil {
		return err
	}
	s := Status(C.tm_remove(p, C.tidemark_writer_id(w)))
	t.release()
	return statusErr(s)
}

// Touch answers a challenge: the writer is alive and deferring on purpose; its grace period
// restarts now.
func (t *Tracker) Touch(w WriterID) error {
	now := t.clock()
	p, err := t.acquire()
	if err != nil {
		return err
	}
	s := Status(C.tm_touch(p, C.tidemark_writer_id(w), now))
	t.release()
	return statusErr(s)
}

// Pause holds a writer back on purpose (backpressure): sweeps neither challenge nor evict it
// until Resume. It still pins the ack.
func (t *Tracker) Pause(w WriterID) error {
	p, err := t.acquire()
	if err != nil {
		return err
	}
	s := Status(C.tm_pause(p, C.tidemark_writer_id(w)))
	t.release()
	return statusErr(s)
}

// Resume resumes a paused writer; its grace period restarts now.
func (t *Tracker) Resume(w WriterID) error {
	now := t.clock()
	p, err := t.acquire()
	if err != nil {
		return err
	}
	s := Status(C.tm_resume(p, C.tidemark_writer_id(w), now))
	t.release()
	return statusErr(s)
}

// Down tells the tracker a writer is gone; see DownClass.
func (t *Tracker) Down(w WriterID, class DownClass) error {
	now := t.clock()
	p, err := t.acquire()
	if err != nil {
		return err
	}
	s := Status(C.tm_down(p, C.tidemark_writer_id(w), C.uint32_t(class), now))
	t.release()
	return statusErr(s)
}

// WriterStatus returns a writer's state and, when evicted, why (tidemark_tracker_writer_status).
func (t *Tracker) WriterStatus(w WriterID) (WriterState, EvictReason, error) {
	p, err := t.acquire()
	if err != nil {
		return 0, 0, err
	}
	var out C.tidemark_writer_status
	s := Status(C.tidemark_tracker_writer_status(p, C.tidemark_writer_id(w), &out))
	t.release()
	if s != StatusOK {
		return 0, 0, statusErr(s)
	}
	return WriterState(out.state), EvictReason(out.reason), nil
}

// WriterState is WriterStatus under its first name, kept as an alias.
func (t *Tracker) WriterState(w WriterID) (WriterState, EvictReason, error) {
	return t.WriterStatus(w)
}

// Commit hands a commit (its last offset) to the tracker with the writers it was delivered
// to. offset.Tx must exceed the previous commit's (ErrOffsetRegressed); every writer must be
// registered (ErrUnknownWriter) and not evicted (ErrEvictedWriter). A refused commit changes
// nothing. Commit from one goroutine: commits are serialised, not ordered.
func (t *Tracker) Commit(offset Offset, writers ...WriterID) error {
	now := t.clock()
	p, err := t.acquire()
	if err != nil {
		return err
	}
	var s Status
	n := len(writers)
	if n <= 8 {
		// By value: `writers` does not escape, so a variadic call allocates nothing.
		var w [8]C.uint64_t
		for i, x := range writers {
			w[i] = C.uint64_t(x)
		}
		s = Status(C.tm_commit_small(p, C.uint64_t(offset.Tx), C.uint64_t(offset.Op), C.size_t(n),
			w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], now))
	} else {
		ws := make([]WriterID, n) // a private copy: pointer-free Go memory, passed for the call only
		copy(ws, writers)
		s = Status(C.tm_commit(p, C.uint64_t(offset.Tx), C.uint64_t(offset.Op),
			(*C.tidemark_writer_id)(unsafe.Pointer(&ws[0])), C.size_t(n), now))
		runtime.KeepAlive(ws)
	}
	t.release()
	return statusErr(s)
}

// Flushed reports that w flushed everything up to offset. A report at or above the last
// commit delivered to w completes it; a lower one is progress (it re-arms the grace period);
// one below an earlier report, or from a writer that owes nothing, is accepted and changes
// nothing (late reports are normal). An evicted writer gets ErrEvictedWriter, a stale id
// ErrUnknownWriter.
func (t *Tracker) Flushed(w WriterID, offset Offset) error {
	now := t.clock()
	p, err := t.acquire()
	if err != nil {
		return err
	}
	s := Status(C.tm_flushed(p, C.tidemark_writer_id(w), C.uint64_t(offset.Tx), C.uint64_t(offset.Op), now))
	t.release()
	if s != StatusOK {
		return statusErr(s)
	}
	return nil
}

// FlushedMany applies len(writers) flush reports in one call (writers[i] flushed up to
// offsets[i], in order) and returns how many failed.
//
// With a non-nil statuses (len ≥ len(writers)), statuses[i] receives each item's status and
// err reports only failures of the call itself. With statuses nil, a failed item makes err an
// *ItemError naming the first one (errors.Is works on it).
//
// Empty or nil writers: ErrEmptyBatch; len(offsets) != len(writers) or a short statuses:
// ErrLengthMismatch.
func (t *Tracker) FlushedMany(writers []WriterID, offsets []Offset, statuses []Status) (failed int, err error) {
	n := len(writers)
	if n == 0 {
		return 0, ErrEmptyBatch
	}
	if len(offsets) != n || (statuses != nil && len(statuses) < n) {
		return 0, ErrLengthMismatch
	}
	now := t.clock()
	p, err := t.acquire()
	if err != nil {
		return 0, err
	}
	// The caller's slices go to C as they are (pointer-free Go memory, read or written during
	// the call only: no copy), and the counts come back by value (no out-parameter to
	// allocate): the call allocates nothing unless an item fails.
	var r C.tm_many_result
	wp := (*C.tidemark_writer_id)(unsafe.Pointer(&writers[0]))
	op := (*C.tidemark_offset)(unsafe.Pointer(&offsets[0]))
	if statuses != nil {
		r = C.tm_flushed_many(p, wp, op, C.size_t(n), (*C.tidemark_status)(unsafe.Pointer(&statuses[0])), now)
		t.release()
		runtime.KeepAlive(statuses)
	} else {
		r = C.tm_flushed_many_first(p, wp, op, C.size_t(n), now)
		t.release()
		if Status(r.status) == StatusOK && r.failed > 0 {
			err = &ItemError{Index: int(r.first_idx), Failed: int(r.failed), Err: statusErr(Status(r.first_status))}
		}
	}
	runtime.KeepAlive(writers)
	runtime.KeepAlive(offsets)
	if s := Status(r.status); s != StatusOK {
		return int(r.failed), statusErr(s)
	}
	return int(r.failed), err
}

// Ack returns the ack — the highest tx such that every commit at or below it was flushed by
// all its writers (or they were evicted or removed) — and whether one exists yet. One atomic
// load on the C side. After Close it returns (0, false).
func (t *Tracker) Ack() (uint64, bool) {
	p, err := t.acquire()
	if err != nil {
		return 0, false
	}
	r := C.tm_ack(p) // by value: no out-parameter to allocate
	t.release()
	return uint64(r.value), Status(r.status) == StatusOK
}

// AckGeneration returns how many times the ack moved.
func (t *Tracker) AckGeneration() (uint64, error) {
	p, err := t.acquire()
	if err != nil {
		return 0, err
	}
	r := C.tm_ack_generation(p)
	t.release()
	return uint64(r.value), statusErr(Status(r.status))
}

// waitSlice bounds how long one blocking C call holds the handle's read lock, so that
// context cancellation and Close are honoured within about this long.
const waitSlice = 20 * time.Millisecond

// WaitAck blocks until the ack exceeds after, then returns it; ctx's error if ctx ends first.
func (t *Tracker) WaitAck(ctx context.Context, after uint64) (uint64, error) {
	return t.waitAck(ctx, after, true)
}

// WaitAnyAck blocks until any ack exists (the first commit, or an initial ack).
func (t *Tracker) WaitAnyAck(ctx context.Context) (uint64, error) {
	return t.waitAck(ctx, 0, false)
}

func (t *Tracker) waitAck(ctx context.Context, after uint64, hasAfter bool) (uint64, error) {
	for {
		slice := sliceFor(ctx)
		p, err := t.acquire()
		if err != nil {
			return 0, err
		}
		var a C.uint64_t
		s := Status(C.tidemark_tracker_wait_ack(p, C.uint64_t(after), C.bool(hasAfter), C.uint64_t(slice), &a))
		t.release()
		switch s {
		case StatusOK:
			return uint64(a), nil
		case StatusTimeout:
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		default:
			return 0, statusErr(s)
		}
	}
}

// LastSeen returns the last commit's offset, and false before the first commit.
func (t *Tracker) LastSeen() (Offset, bool, error) {
	p, err := t.acquire()
	if err != nil {
		return Offset{}, false, err
	}
	var o C.tidemark_offset
	s := Status(C.tidemark_tracker_last_seen(p, &o))
	t.release()
	switch s {
	case StatusOK:
		return Offset{uint64(o.tx), uint64(o.op)}, true, nil
	case StatusEmpty:
		return Offset{}, false, nil
	}
	return Offset{}, false, statusErr(s)
}

// Pinning describes the writer whose oldest unflushed delivery holds the ack back.
type Pinning struct {
	Writer        WriterID
	Owes          Offset // the delivery it owes
	Flushed       Offset // its highest report (valid when HasFlushed)
	HasFlushed    bool
	SinceProgress time.Duration
	Paused        bool
	Challenged    bool
	Orphaned      bool
}

// Pinning returns the writer holding the ack back; ok is false when nothing is pending.
func (t *Tracker) Pinning() (p Pinning, ok bool, err error) {
	now := t.clock()
	h, err := t.acquire()
	if err != nil {
		return Pinning{}, false, err
	}
	var out C.tidemark_pinning
	s := Status(C.tm_pinning(h, now, &out))
	t.release()
	switch s {
	case StatusOK:
	case StatusEmpty:
		return Pinning{}, false, nil
	default:
		return Pinning{}, false, statusErr(s)
	}
	return Pinning{
		Writer:        WriterID(out.writer),
		Owes:          Offset{uint64(out.owes.tx), uint64(out.owes.op)},
		Flushed:       Offset{uint64(out.flushed.tx), uint64(out.flushed.op)},
		HasFlushed:    bool(out.has_flushed),
		SinceProgress: time.Duration(out.ms_since_progress) * time.Millisecond,
		Paused:        bool(out.paused),
		Challenged:    bool(out.challenged),
		Orphaned:      bool(out.orphaned),
	}, true, nil
}

// TrackerStats are a tracker's counters and gauges (see tidemark_tracker_counters).
type TrackerStats struct {
	Ack             uint64
	HasAck          bool
	LastSeen        Offset
	HasLastSeen     bool
	AckLag          uint64
	AckAdvances     uint64
	Registered      uint64
	Pending         uint64
	Commits         uint64
	Flushes         uint64
	LateFlushes     uint64
	Removes         uint64
	Challenges      uint64
	EvictedCrashed  uint64
	EvictedOrphaned uint64
	EvictedStalled  uint64
	EventsDropped   uint64
	MemoryBytes     uint64
}

// Stats returns a snapshot of the counters (takes a lock briefly: for metrics, not per flush).
func (t *Tracker) Stats() (TrackerStats, error) {
	now := t.clock()
	p, err := t.acquire()
	if err != nil {
		return TrackerStats{}, err
	}
	var c C.tidemark_tracker_counters
	s := Status(C.tm_stats(p, now, &c))
	t.release()
	if s != StatusOK {
		return TrackerStats{}, statusErr(s)
	}
	return TrackerStats{
		Ack: uint64(c.ack), HasAck: bool(c.has_ack),
		LastSeen: Offset{uint64(c.last_seen.tx), uint64(c.last_seen.op)}, HasLastSeen: bool(c.has_last_seen),
		AckLag: uint64(c.ack_lag), AckAdvances: uint64(c.ack_advances),
		Registered: uint64(c.registered), Pending: uint64(c.pending),
		Commits: uint64(c.commits), Flushes: uint64(c.flushes), LateFlushes: uint64(c.late_flushes),
		Removes: uint64(c.removes), Challenges: uint64(c.challenges),
		EvictedCrashed: uint64(c.evicted_crashed), EvictedOrphaned: uint64(c.evicted_orphaned),
		EvictedStalled: uint64(c.evicted_stalled), EventsDropped: uint64(c.events_dropped),
		MemoryBytes: uint64(c.memory_bytes),
	}, nil
}

// WorkStats is what the tracker's calls did to its delivery log (tidemark_work_stats): the
// evidence that every call does bounded work. Counters are totals since NewTracker.
type WorkStats struct {
	// Budget is the most deliveries one call may examine (SetCallBudget; default 1 024).
	Budget uint64
	// DeliveriesPopped counts deliveries popped at the head of the log, in all.
	DeliveriesPopped uint64
	// EntriesScanned counts deliveries examined by compaction, in all.
	EntriesScanned uint64
	// MaxCallWork is the most deliveries any single call examined so far (never above the
	// budget in force at the time).
	MaxCallWork uint64
	// Backlogs counts calls that stopped at the budget and left work for later calls.
	Backlogs uint64
	// Backlog is whether leftover work waits now (see RunBacklog).
	Backlog bool
	// LogLen is the number of deliveries in the log now.
	LogLen uint64
}

// WorkStats returns the tracker's work counters (for tests and metrics, not per flush).
func (t *Tracker) WorkStats() (WorkStats, error) {
	p, err := t.acquire()
	if err != nil {
		return WorkStats{}, err
	}
	var w C.tidemark_work_stats
	s := Status(C.tidemark_tracker_work_stats(p, &w))
	t.release()
	if s != StatusOK {
		return WorkStats{}, statusErr(s)
	}
	return WorkStats{
		Budget: uint64(w.budget), DeliveriesPopped: uint64(w.deliveries_popped),
		EntriesScanned: uint64(w.entries_scanned), MaxCallWork: uint64(w.max_call_work),
		Backlogs: uint64(w.backlogs), Backlog: bool(w.backlog), LogLen: uint64(w.log_len),
	}, nil
}

// SetCallBudget sets the most deliveries one call may examine (pop, judge or compact);
// the default is 1 024. Work beyond it is left as a backlog that later calls of any kind
// continue within their own budget, or that RunBacklog finishes; meanwhile the ack stays
// safe (never above the exact value) and it is exact again once the backlog is done.
// 0 is ErrInvalidArgument.
func (t *Tracker) SetCallBudget(n uint64) error {
	p, err := t.acquire()
	if err != nil {
		return err
	}
	s := Status(C.tidemark_tracker_set_call_budget(p, C.uint64_t(n)))
	t.release()
	return statusErr(s)
}

// RunBacklog runs one budgeted step of leftover work (a drain backlog or a compaction pass)
// and reports whether more remains. A tracker without a backlog returns (false, nil) at once.
// A host that wants the backlog finished soon, rather than by later traffic, loops on it
// from a background goroutine:
//
//	for more, err := t.RunBacklog(); more && err == nil; more, err = t.RunBacklog() {
//	}
func (t *Tracker) RunBacklog() (more bool, err error) {
	p, err := t.acquire()
	if err != nil {
		return false, err
	}
	r := C.tm_run_backlog(p) // by value: a background loop allocates nothing per step
	t.release()
	if s := Status(r.status); s != StatusOK {
		return false, statusErr(s)
	}
	return r.value != 0, nil
}

// HasBacklog reports whether leftover work (a drain backlog or a compaction pass) waits for
// RunBacklog or later calls.
func (t *Tracker) HasBacklog() (bool, error) {
	p, err := t.acquire()
	if err != nil {
		return false, err
	}
	r := C.tm_has_backlog(p)
	t.release()
	if s := Status(r.status); s != StatusOK {
		return false, statusErr(s)
	}
	return r.value != 0, nil
}

// SetStallGrace changes the grace period for later sweeps.
func (t *Tracker) SetStallGrace(d time.Duration) error {
	if d < 0 {
		return ErrInvalidArgument
	}
	p, err := t.acquire()
	if err != nil {
		return err
	}
	s := Status(C.tidemark_tracker_set_stall_grace_ms(p, C.uint64_t(durationMs(d))))
	t.release()
	return statusErr(s)
}

// SweepOutcome is what a sweep did.
type SweepOutcome struct {
	Challenged int
	Evicted    int
}

// Sweep runs a staleness sweep now: challenges pending writers without progress for the
// grace period, evicts those challenged earlier that still made none, and evicts orphans past
// the grace period. Events are queued for TakeEvents.
func (t *Tracker) Sweep() (SweepOutcome, error) {
	now := t.clock()
	p, err := t.acquire()
	if err != nil {
		return SweepOutcome{}, err
	}
	var out C.tidemark_sweep_outcome
	s := Status(C.tm_sweep(p, now, &out))
	t.release()
	if s != StatusOK {
		return SweepOutcome{}, statusErr(s)
	}
	return SweepOutcome{Challenged: int(out.challenged), Evicted: int(out.evicted)}, nil
}

// TakeEvents moves up to len(buf) queued events, oldest first, into buf and returns how many
// (0 when none). Never blocks. A nil or empty buf is ErrEmptyBatch.
func (t *Tracker) TakeEvents(buf []Event) (int, error) {
	if len(buf) == 0 {
		return 0, ErrEmptyBatch
	}
	p, err := t.acquire()
	if err != nil {
		return 0, err
	}
	// buf is pointer-free Go memory with tidemark_event's layout, written during the call only.
	r := C.tm_take_events(p, (*C.tidemark_event)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	t.release()
	runtime.KeepAlive(buf)
	if s := Status(r.status); s != StatusOK {
		return 0, statusErr(s)
	}
	return int(r.value), nil
}

// WatchOptions configures WatchEvents.
type WatchOptions struct {
	Every  time.Duration // polling period (0: 100 ms)
	Sweep  bool          // also run Sweep every period (the usual staleness driver)
	Buffer int           // channel capacity (0: 64)
}

// WatchEvents starts a goroutine that polls TakeEvents (and, with opts.Sweep, runs Sweep)
// every opts.Every and sends the events on the returned channel, oldest first. The channel is
// closed when ctx ends or the tracker is closed. Events are polled, never pushed from C.
func (t *Tracker) WatchEvents(ctx context.Context, opts WatchOptions) <-chan Event {
	if opts.Every <= 0 {
		opts.Every = 100 * time.Millisecond
	}
	if opts.Buffer <= 0 {
		opts.Buffer = 64
	}
	ch := make(chan Event, opts.Buffer)
	go func() {
		defer close(ch)
		tick := time.NewTicker(opts.Every)
		defer tick.Stop()
		buf := make([]Event, 256)
		for {
			if opts.Sweep {
				if _, err := t.Sweep(); err != nil {
					return
				}
			}
			for {
				n, err := t.TakeEvents(buf)
				if err != nil {
					return
				}
				for _, e := range buf[:n] {
					select {
					case ch <- e:
					case <-ctx.Done():
						return
					}
				}
				if n < len(buf) {
					break
				}
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch
}

func durationMs(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64((d + time.Millisecond - 1) / time.Millisecond)
}

// sliceFor is how long the next blocking C call may wait: waitSlice, or less when ctx's
// deadline is nearer (at least 1 ms; 0 when ctx is already done).
func sliceFor(ctx context.Context) uint64 {
	if ctx.Err() != nil {
		return 0
	}
	ms := uint64(waitSlice / time.Millisecond)
	if dl, ok := ctx.Deadline(); ok {
		left := durationMs(time.Until(dl))
		if left < ms {
			ms = left
		}
		if ms == 0 {
			ms = 1
		}
	}
	return ms
}

// flushedUnguarded is Flushed without the handle guard: only for BenchmarkFlushedUnguarded,
// which measures what the guard costs. Not safe against a concurrent Close.
func (t *Tracker) flushedUnguarded(w WriterID, offset Offset) Status {
	s := Status(C.tm_flushed(t.ptr, C.tidemark_writer_id(w), C.uint64_t(offset.Tx), C.uint64_t(offset.Op), t.clock()))
	runtime.KeepAlive(t)
	return s
}

// crossingNoop makes one cgo call that does nothing: only for BenchmarkCrossing, which
// measures what a bare crossing costs.
func crossingNoop() { C.tm_noop() }
