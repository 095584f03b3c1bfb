/* Small C helpers for the Go binding (included by every cgo file's preamble).
 *
 * Why they exist: one cgo crossing costs tens of nanoseconds, cgo makes every Go pointer passed
 * to C escape (an out-parameter on the Go stack becomes a heap allocation per call), and cgo
 * forbids passing Go memory that holds Go pointers (e.g. a tidemark_message whose `data` points
 * into a Go slice). So these helpers take plain values (or pointer-free Go arrays), build the
 * tidemark structs on the C stack, return their results by value, read tidemark_monotonic_ms()
 * on the C side (unless the tracker has an injected clock: see TM_LIBRARY_CLOCK), and make the
 * tidemark call: one crossing per Go call. Calls that need none of this (push_packed, whose
 * inputs are already pointer-free Go arrays and whose out-parameters live in pooled Go memory)
 * are made directly. Nothing here keeps a pointer past the call. */
#ifndef TIDEMARK_GO_SHIM_H
#define TIDEMARK_GO_SHIM_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tidemark.h"

#define TM_STACK_MSGS 256

/* The `now` argument of the tracker helpers: TM_LIBRARY_CLOCK reads tidemark_monotonic_ms() here
 * (no extra crossing); any other value is the caller's clock (TrackerOptions.Now in Go). */
#define TM_LIBRARY_CLOCK UINT64_MAX

static inline uint64_t tm_now(uint64_t now) {
  return now == TM_LIBRARY_CLOCK ? tidemark_monotonic_ms() : now;
}

/* Results returned by value. cgo makes every Go pointer passed to C escape, so an out-parameter
 * on the Go stack (`var a C.uint64_t; f(&a)`) becomes a heap allocation per call; the helpers
 * below write their out-parameters on the C stack and return them in one struct instead, so
 * the hot calls (Ack, FlushedMany, Register, TakeEvents, RunBacklog, NextBatch) allocate
 * nothing. */
typedef struct tm_u64_result {
  uint64_t value;
  tidemark_status status;
} tm_u64_result;

typedef struct tm_many_result {
  size_t failed;
  size_t first_idx; /* SIZE_MAX when no item failed (tm_flushed_many_first only) */
  tidemark_status status;
  tidemark_status first_status;
} tm_many_result;

static inline tm_u64_result tm_ack(const tidemark_tracker *t) {
  tm_u64_result r = {0, TIDEMARK_STATUS_OK};
  r.status = tidemark_tracker_ack(t, &r.value);
  return r;
}

static inline tm_u64_result tm_ack_generation(const tidemark_tracker *t) {
  tm_u64_result r = {0, TIDEMARK_STATUS_OK};
  r.status = tidemark_tracker_ack_generation(t, &r.value);
  return r;
}

static inline tm_u64_result tm_register(const tidemark_tracker *t) {
  tm_u64_result r = {0, TIDEMARK_STATUS_OK};
  tidemark_writer_id id = 0;
  r.status = tidemark_tracker_register(t, &id);
  r.value = id;
  return r;
}

/* run_backlog / has_backlog: value is the bool out-parameter (0 or 1). */
static inline tm_u64_result tm_run_backlog(const tidemark_tracker *t) {
  tm_u64_result r = {0, TIDEMARK_STATUS_OK};
  bool more = false;
  r.status = tidemark_tracker_run_backlog(t, &more);
  r.value = more;
  return r;
}

static inline tm_u64_result tm_has_backlog(const tidemark_tracker *t) {
  tm_u64_result r = {0, TIDEMARK_STATUS_OK};
  bool has = false;
  r.status = tidemark_tracker_has_backlog(t, &has);
  r.value = has;
  return r;
}

static inline tm_u64_result tm_take_events(const tidemark_tracker *t, tidemark_event *buf,
                                           size_t cap) {
  tm_u64_result r = {0, TIDEMARK_STATUS_OK};
  size_t n = 0;
  r.status = tidemark_tracker_take_events(t, buf, cap, &n);
  r.value = n;
  return r;
}

/* Does nothing: BenchmarkCrossing measures a bare cgo crossing with it. */
static inline void tm_noop(void) {}

static inline tidemark_status tm_commit_small(const tidemark_tracker *t, uint64_t tx, uint64_t op,
                                              size_t n, uint64_t w0, uint64_t w1, uint64_t w2,
                                              uint64_t w3, uint64_t w4, uint64_t w5, uint64_t w6,
                                              uint64_t w7, uint64_t now) {
  tidemark_writer_id ws[8] = {w0, w1, w2, w3, w4, w5, w6, w7};
  tidemark_offset o = {tx, op};
  return tidemark_tracker_commit(t, o, n ? ws : NULL, n, tm_now(now));
}

static inline tidemark_status tm_commit(const tidemark_tracker *t, uint64_t tx, uint64_t op,
                                        const tidemark_writer_id *ws, size_t n, uint64_t now) {
  tidemark_offset o = {tx, op};
  return tidemark_tracker_commit(t, o, ws, n, tm_now(now));
}

static inline tidemark_status tm_flushed(const tidemark_tracker *t, tidemark_writer_id w,
                                         uint64_t tx, uint64_t op, uint64_t now) {
  tidemark_offset o = {tx, op};
  return tidemark_tracker_flushed(t, w, o, tm_now(now));
}

/* flushed_many with the caller's statuses array. */
static inline tm_many_result tm_flushed_many(const tidemark_tracker *t,
                                             const tidemark_writer_id *ws,
                                             const tidemark_offset *os, size_t n,
                                             tidemark_status *statuses, uint64_t now) {
  tm_many_result r = {0, SIZE_MAX, TIDEMARK_STATUS_OK, TIDEMARK_STATUS_OK};
  r.status = tidemark_tracker_flushed_many(t, ws, os, n, tm_now(now), statuses, &r.failed);
  return r;
}

/* flushed_many without a statuses array: per-item statuses go to a C stack array, chunk by
 * chunk; reports the failure count and the first failure (index SIZE_MAX when none). */
static inline tm_many_result tm_flushed_many_first(const tidemark_tracker *t,
                                                   const tidemark_writer_id *ws,
                                                   const tidemark_offset *os, size_t n,
                                                   uint64_t now_in) {
  tidemark_status st[TM_STACK_MSGS];
  tm_many_result r = {0, SIZE_MAX, TIDEMARK_STATUS_OK, TIDEMARK_STATUS_OK};
  uint64_t now = tm_now(now_in);
  for (size_t i = 0; i < n; i += TM_STACK_MSGS) {
    size_t k = n - i < TM_STACK_MSGS ? n - i : TM_STACK_MSGS;
    size_t f = 0;
    tidemark_status s = tidemark_tracker_flushed_many(t, ws + i, os + i, k, now, st, &f);
    if (s != TIDEMARK_STATUS_OK) {
      r.status = s;
      return r;
    }
    if (f != 0 && r.first_idx == SIZE_MAX) {
      for (size_t j = 0; j < k; j++) {
        if (st[j] != TIDEMARK_STATUS_OK) {
          r.first_idx = i + j;
          r.first_status = st[j];
          break;
        }
      }
    }
    r.failed += f;
  }
  return r;
}

/* One helper per writer call (remove and unregister take no clock). */
static inline tidemark_status tm_remove(const tidemark_tracker *t, tidemark_writer_id w) {
  return tidemark_tracker_remove(t, w);
}

static inline tidemark_status tm_touch(const tidemark_tracker *t, tidemark_writer_id w,
                                       uint64_t now) {
  return tidemark_tracker_touch(t, w, tm_now(now));
}

static inline tidemark_status tm_pause(const tidemark_tracker *t, tidemark_writer_id w) {
  return tidemark_tracker_pause(t, w);
}

static inline tidemark_status tm_resume(const tidemark_tracker *t, tidemark_writer_id w,
                                        uint64_t now) {
  return tidemark_tracker_resume(t, w, tm_now(now));
}

static inline tidemark_status tm_unregister(const tidemark_tracker *t, tidemark_writer_id w) {
  return tidemark_tracker_unregister(t, w);
}

static inline tidemark_status tm_down(const tidemark_tracker *t, tidemark_writer_id w,
                                      uint32_t cls, uint64_t now) {
  return tidemark_tracker_down(t, w, cls, tm_now(now));
}

static inline tidemark_status tm_sweep(const tidemark_tracker *t, uint64_t now,
                                       tidemark_sweep_outcome *out) {
  return tidemark_tracker_sweep(t, tm_now(now), out);
}

static inline tidemark_status tm_pinning(const tidemark_tracker *t, uint64_t now,
                                         tidemark_pinning *out) {
  return tidemark_tracker_pinning(t, tm_now(now), out);
}

static inline tidemark_status tm_stats(const tidemark_tracker *t, uint64_t now,
                                       tidemark_tracker_counters *out) {
  return tidemark_tracker_stats(t, tm_now(now), out);
}

static inline tidemark_status tm_try_push(const tidemark_batch_buffer *b, const uint8_t *data,
                                          size_t len, uint64_t tx, uint64_t op, int has_offset) {
  tidemark_message m;
  m.data = len ? data : NULL;
  m.len = len;
  m.offset.tx = tx;
  m.offset.op = op;
  m.has_offset = has_offset != 0;
  return tidemark_batch_buffer_try_push(b, &m);
}

static inline tidemark_status tm_push_timeout(const tidemark_batch_buffer *b, const uint8_t *data,
                                              size_t len, uint64_t tx, uint64_t op,
                                              int has_offset, uint64_t timeout_ms) {
  tidemark_message m;
  m.data = len ? data : NULL;
  m.len = len;
  m.offset.tx = tx;
  m.offset.op = op;
  m.has_offset = has_offset != 0;
  return tidemark_batch_buffer_push_timeout(b, &m, timeout_ms);
}

/* next_batch, then the batch's summary and borrowed view, in one crossing (results by value).
 * On OK, `batch` is a handle the caller owns and `view` points into it (valid until the handle
 * is released); on any other status nothing is held (a batch whose summary or view could not be
 * read is nacked with requeue rather than lost). */
typedef struct tm_next_result {
  tidemark_batch *batch;
  tidemark_batch_summary summary;
  tidemark_batch_view view;
  tidemark_status status;
} tm_next_result;

static inline tm_next_result tm_next_batch(const tidemark_batch_buffer *b, uint64_t timeout_ms) {
  tm_next_result r;
  memset(&r, 0, sizeof r);
  r.status = tidemark_batch_buffer_next_batch(b, timeout_ms, &r.batch);
  if (r.status != TIDEMARK_STATUS_OK) {
    r.batch = NULL;
    return r;
  }
  r.status = tidemark_batch_info(r.batch, &r.summary);
  if (r.status == TIDEMARK_STATUS_OK) r.status = tidemark_batch_get_view(r.batch, &r.view);
  if (r.status != TIDEMARK_STATUS_OK) {
    tidemark_batch_buffer_nack(b, r.batch, true);
    r.batch = NULL;
  }
  return r;
}

#endif
