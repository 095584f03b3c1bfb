package tidemark

import (
	"errors"
	"fmt"
	"strings"
)

// Status is a raw tidemark_status value (stable numbers from include/tidemark.h).
type Status uint32

// prefix starts every error text of the package, once: errors that wrap another tidemark
// error (ItemError, PushError, PushManyError) quote the inner text without it.
const prefix = "tidemark: "

// innerText is err's text without the package prefix, for quoting inside another error.
func innerText(err error) string {
	if err == nil {
		return "<nil>"
	}
	return strings.TrimPrefix(err.Error(), prefix)
}

// The status values of include/tidemark.h.
const (
	StatusOK              Status = 0
	StatusNullArgument    Status = 1
	StatusInvalidArgument Status = 2
	StatusOffsetRegressed Status = 3
	StatusUnknownWriter   Status = 4
	StatusEvictedWriter   Status = 5
	StatusCapacity        Status = 6
	StatusFull            Status = 7
	StatusStopping        Status = 8
	StatusClosed          Status = 9
	StatusTimeout         Status = 10
	StatusWouldBlock      Status = 11
	StatusBufferTooSmall  Status = 12
	StatusPanic           Status = 13
	StatusTooLarge        Status = 14
	StatusNotInFlight     Status = 15
	StatusLinkFailed      Status = 16
	StatusEmpty           Status = 17
	StatusInvalidHandle   Status = 18
	StatusOutOfMemory     Status = 19
)

// Error is the type of every error the package returns for a C status or a misuse it detects.
// Compare with errors.Is against the sentinels below; Status tells the C status behind it.
type Error struct {
	status Status
	msg    string
	parent *Error // a binding-level error Is its parent too (ErrEmptyBatch Is ErrInvalidArgument)
}

func (e *Error) Error() string { return prefix + e.msg }

// Status returns the C status this error stands for.
func (e *Error) Status() Status { return e.status }

// Is reports whether target is this error's parent sentinel, or ErrNotAccepting for
// ErrStopping and ErrClosed (identity covers the rest).
func (e *Error) Is(target error) bool {
	if target == ErrNotAccepting {
		return e == ErrStopping || e == ErrClosed
	}
	return e.parent != nil && target == error(e.parent)
}

func sentinel(s Status, msg string) *Error { return &Error{status: s, msg: msg} }

// Sentinel errors, one per C status (see include/tidemark.h for each one's meaning). Each is
// named after its status: TIDEMARK_STATUS_EVICTED_WRITER is ErrEvictedWriter.
var (
	ErrNullArgument    = sentinel(StatusNullArgument, "NULL argument (a bug in the binding)")
	ErrInvalidArgument = sentinel(StatusInvalidArgument, "invalid argument")
	ErrOffsetRegressed = sentinel(StatusOffsetRegressed, "offset regressed (a commit tx not above the previous commit's)")
	ErrUnknownWriter   = sentinel(StatusUnknownWriter, "unknown writer (never registered, or unregistered: a stale id)")
	ErrEvictedWriter   = sentinel(StatusEvictedWriter, "writer evicted (unregister it and register a new one)")
	ErrCapacity        = sentinel(StatusCapacity, "tracker at max_writers")
	ErrFull            = sentinel(StatusFull, "batch buffer full: retry later")
	ErrStopping        = sentinel(StatusStopping, "batch buffer stopping: admission closed")
	ErrClosed          = sentinel(StatusClosed, "closed")
	ErrTimeout         = sentinel(StatusTimeout, "timed out")
	ErrWouldBlock      = sentinel(StatusWouldBlock, "nothing ready yet")
	ErrBufferTooSmall  = sentinel(StatusBufferTooSmall, "buffer too small")
	ErrPanic           = sentinel(StatusPanic, "panic caught in the native library (a tidemark bug)")
	ErrTooLarge        = sentinel(StatusTooLarge, "message larger than the buffer's capacity_bytes")
	ErrNotInFlight     = sentinel(StatusNotInFlight, "batch not in flight in this buffer")
	ErrLinkFailed      = sentinel(StatusLinkFailed, "batch delivered, but the linked tracker refused the report")
	ErrEmpty           = sentinel(StatusEmpty, "no value yet")
	ErrInvalidHandle   = sentinel(StatusInvalidHandle, "invalid handle")
	ErrOutOfMemory     = sentinel(StatusOutOfMemory, "out of memory in the native library")
)

// ErrEvicted is ErrEvictedWriter under its first name, kept as an alias: the same value, so
// errors.Is(err, ErrEvicted) and errors.Is(err, ErrEvictedWriter) always agree.
var ErrEvicted = ErrEvictedWriter

// Misuse detected by the binding itself (no C call was made). Each Is ErrInvalidArgument too.
var (
	// ErrEmptyBatch: a batch call (FlushedMany, PushMany, TakeEvents) got no items or no room.
	ErrEmptyBatch = &Error{status: StatusInvalidArgument, msg: "empty batch: zero items (nil or empty slice)", parent: ErrInvalidArgument}
	// ErrLengthMismatch: parallel slices of different lengths.
	ErrLengthMismatch = &Error{status: StatusInvalidArgument, msg: "slices of different lengths", parent: ErrInvalidArgument}
	// ErrBatchDone: the batch was already acked, nacked or released.
	ErrBatchDone = &Error{status: StatusInvalidArgument, msg: "batch already acked, nacked or released", parent: ErrInvalidArgument}
	// ErrBatchInFlight: NextBatchInto was given a Batch that still holds a batch (not yet
	// acked or nacked). Nothing was taken.
	ErrBatchInFlight = &Error{status: StatusInvalidArgument, msg: "batch still in flight: ack or nack it before reusing it", parent: ErrInvalidArgument}
	// ErrNilBatch: a nil *Batch.
	ErrNilBatch = &Error{status: StatusNullArgument, msg: "nil batch", parent: ErrNullArgument}
	// ErrNotStopped: Close found a buffer that was never stopped; it stopped it with no grace
	// and the error (a *NotStoppedError) carries the report with the handed-back messages.
	ErrNotStopped = errors.New(prefix + "batch buffer closed without Stop")
)

// ErrNotAccepting matches, with errors.Is, both refusals that mean "this handle takes no
// more": ErrStopping (admission closed, the buffer is draining) and ErrClosed (stopped, or the
// handle was closed). A producer that only needs to know whether to stop offering checks it
// alone; ErrStopping and ErrClosed still match on their own. No call returns it itself.
var ErrNotAccepting = errors.New(prefix + "not accepting (stopping or closed)")

// statusErr maps a C status to its sentinel: the one place where that mapping lives.
func statusErr(s Status) error {
	switch s {
	case StatusOK:
		return nil
	case StatusNullArgument:
		return ErrNullArgument
	case StatusInvalidArgument:
		return ErrInvalidArgument
	case StatusOffsetRegressed:
		return ErrOffsetRegressed
	case StatusUnknownWriter:
		return ErrUnknownWriter
	case StatusEvictedWriter:
		return ErrEvictedWriter
	case StatusCapacity:
		return ErrCapacity
	case StatusFull:
		return ErrFull
	case StatusStopping:
		return ErrStopping
	case StatusClosed:
		return ErrClosed
	case StatusTimeout:
		return ErrTimeout
	case StatusWouldBlock:
		return ErrWouldBlock
	case StatusBufferTooSmall:
		return ErrBufferTooSmall
	case StatusPanic:
		return ErrPanic
	case StatusTooLarge:
		return ErrTooLarge
	case StatusNotInFlight:
		return ErrNotInFlight
	case StatusLinkFailed:
		return ErrLinkFailed
	case StatusEmpty:
		return ErrEmpty
	case StatusInvalidHandle:
		return ErrInvalidHandle
	case StatusOutOfMemory:
		return ErrOutOfMemory
	default:
		return &Error{status: s, msg: unknownStatus(s)}
	}
}

// unknownStatus names a status this binding does not know (the C library's description of
// one is only "unknown status", so the number is the information).
func unknownStatus(s Status) string { return fmt.Sprintf("unknown status %d", uint32(s)) }

// Err returns the sentinel error for s (nil for StatusOK).
func (s Status) Err() error { return statusErr(s) }

// String is the C library's description of the status ("batch buffer is full"), or
// "unknown status n" for a number the library does not define.
func (s Status) String() string {
	if s > StatusOutOfMemory {
		return unknownStatus(s)
	}
	return statusMessage(s)
}

// ItemError reports the first failed item of a batch call (FlushedMany without a statuses
// slice). It unwraps to that item's sentinel.
type ItemError struct {
	Index  int   // index of the first failed item
	Failed int   // how many items failed in all
	Err    error // the first failure's sentinel
}

func (e *ItemError) Error() string {
	return fmt.Sprintf("%s%d item(s) failed; first at index %d: %s", prefix, e.Failed, e.Index, innerText(e.Err))
}

func (e *ItemError) Unwrap() error { return e.Err }

// PushError is a refused push: the message was not taken and comes back in Message.
type PushError struct {
	Message Message
	Err     error // ErrFull, ErrStopping, ErrClosed, ErrTooLarge, ...
}

func (e *PushError) Error() string { return prefix + "push refused: " + innerText(e.Err) }

func (e *PushError) Unwrap() error { return e.Err }

// PushManyError is a partly refused PushMany: Accepted messages (a prefix) were taken, the
// rest come back in Rest, in order.
type PushManyError struct {
	Accepted int
	Rest     []Message
	Err      error // why Rest[0] was refused
}

func (e *PushManyError) Error() string {
	return fmt.Sprintf("%spush refused after %d message(s), %d handed back: %s", prefix, e.Accepted, len(e.Rest), innerText(e.Err))
}

func (e *PushManyError) Unwrap() error { return e.Err }

// NotStoppedError is returned by BatchBuffer.Close when the buffer was never stopped: Close
// stopped it with no grace; Report holds what was handed back.
type NotStoppedError struct {
	Report *StopReport
}

func (e *NotStoppedError) Error() string {
	return fmt.Sprintf("%sbatch buffer closed without Stop; %d message(s) handed back in the report", prefix, len(e.Report.HandedBack))
}

func (e *NotStoppedError) Is(target error) bool { return target == ErrNotStopped }
