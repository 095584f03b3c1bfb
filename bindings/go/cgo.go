// Package tidemark is the Go binding of the tidemark C ABI (include/tidemark.h): an exact
// flush-offset tracker with staleness sweeps (Tracker) and a many-producer, one-sink batch
// buffer with a draining stop (BatchBuffer).
//
// The binding links the static library built by
//
//	cargo build --release -p tidemark-ffi
//
// (target/release/libtidemark.a at the workspace root). Every handle is owned by its Go
// wrapper: Close is idempotent, calls after Close return ErrClosed, a finalizer frees a
// forgotten handle only as a backstop. C never calls into Go and keeps no Go pointer past a
// call; batches and stop reports are copied into Go memory before they are returned.
package tidemark

// This file holds every #cgo directive of the package (they apply package-wide) and the
// compile-time checks that the Go mirrors of C structs have the C layout.

/*
#cgo CFLAGS: -I${SRCDIR}/../../include -I${SRCDIR} -O2
#cgo LDFLAGS: ${SRCDIR}/../../target/release/libtidemark.a -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc
#include "shim.h"
*/
import "C"

import "unsafe"

// Compile-time layout checks: each line fails to compile (negative or overflowing constant)
// unless the Go type has exactly the C type's size. These types are passed to C by pointer
// without copying (FlushedMany, Commit, TakeEvents).
const (
	_ = uint(unsafe.Sizeof(Offset{}) - C.sizeof_tidemark_offset)
	_ = uint(C.sizeof_tidemark_offset - unsafe.Sizeof(Offset{}))
	_ = uint(unsafe.Sizeof(Event{}) - C.sizeof_tidemark_event)
	_ = uint(C.sizeof_tidemark_event - unsafe.Sizeof(Event{}))
	_ = uint(unsafe.Sizeof(WriterID(0)) - C.sizeof_tidemark_writer_id)
	_ = uint(C.sizeof_tidemark_writer_id - unsafe.Sizeof(WriterID(0)))
	_ = uint(unsafe.Sizeof(Status(0)) - C.sizeof_tidemark_status)
	_ = uint(C.sizeof_tidemark_status - unsafe.Sizeof(Status(0)))
	// Field offsets of the Event mirror.
	_ = uint(unsafe.Offsetof(Event{}.Writer) - unsafe.Offsetof(C.tidemark_event{}.writer))
	_ = uint(unsafe.Offsetof(C.tidemark_event{}.writer) - unsafe.Offsetof(Event{}.Writer))
	_ = uint(unsafe.Offsetof(Event{}.Reason) - unsafe.Offsetof(C.tidemark_event{}.reason))
	_ = uint(unsafe.Offsetof(C.tidemark_event{}.reason) - unsafe.Offsetof(Event{}.Reason))
)

// Version returns the C library's version string, e.g. "0.1.0".
func Version() string {
	return C.GoString(C.tidemark_version())
}

// MonotonicMs returns the library's monotonic clock in milliseconds: the clock the batch
// buffers use and the binding passes as now_ms to every tracker call (unless the tracker was
// made with TrackerOptions.Now).
func MonotonicMs() uint64 {
	return uint64(C.tidemark_monotonic_ms())
}

// statusMessage is the C library's description of a status.
func statusMessage(s Status) string {
	return C.GoString(C.tidemark_status_message(C.uint32_t(s)))
}
