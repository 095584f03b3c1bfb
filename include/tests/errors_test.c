/* Every error path of the C ABI: NULL arguments, foreign and misaligned handles, stale and
 * evicted writer ids, regressed offsets, invalid options, use after stop, caller buffers too
 * small, and out-parameters left untouched on errors. */
#include <string.h>

#include "check.h"

static void test_null_arguments(void) {
  tidemark_tracker_options o;
  tidemark_tracker *t = NULL;
  tidemark_writer_id w = 0;
  uint64_t u = 7;
  tidemark_offset zero = {0, 0};
  CHECK_STATUS(tidemark_tracker_options_default(NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_OK(tidemark_tracker_options_default(&o));
  CHECK_STATUS(tidemark_tracker_new(NULL, &t), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_new(&o, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK(t == NULL);
  CHECK_STATUS(tidemark_tracker_register(NULL, &w), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_register_if_allocated(NULL, &w), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_ack(NULL, &u), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_flushed(NULL, 1, zero, 0), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_sweep(NULL, 0, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK(u == 7);

  CHECK_OK(tidemark_tracker_new(&o, &t));
  CHECK_STATUS(tidemark_tracker_register(t, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_register_if_allocated(t, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_OK(tidemark_tracker_register(t, &w));
  CHECK_STATUS(tidemark_tracker_commit(t, zero, NULL, 1, 0), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_OK(tidemark_tracker_commit(t, zero, NULL, 0, 0)); /* a commit no writer received */
  CHECK_STATUS(tidemark_tracker_ack(t, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_sweep(t, 0, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_stats(t, 0, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_pinning(t, 0, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_writer_status(t, w, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  size_t n = 5;
  tidemark_status st[2];
  tidemark_offset offs[2] = {{1, 0}, {1, 0}};
  tidemark_writer_id ws[2] = {w, w};
  CHECK_STATUS(tidemark_tracker_flushed_many(t, ws, NULL, 2, 0, st, &n),
               TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_flushed_many(t, ws, offs, 2, 0, NULL, &n),
               TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_flushed_many(t, ws, offs, 2, 0, st, NULL),
               TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_tracker_take_events(t, NULL, 4, &n), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK(n == 5);
  CHECK_OK(tidemark_tracker_take_events(t, NULL, 0, &n));
  CHECK(n == 0);

  tidemark_batch_config c;
  tidemark_batch_buffer *b = NULL;
  CHECK_STATUS(tidemark_batch_config_default(NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_OK(tidemark_batch_config_default(&c));
  CHECK_STATUS(tidemark_batch_buffer_new(NULL, &b), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_batch_buffer_new(&c, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_OK(tidemark_batch_buffer_new(&c, &b));
  CHECK_STATUS(tidemark_batch_buffer_try_push(b, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  tidemark_message m = {NULL, 3, {0, 0}, false};
  CHECK_STATUS(tidemark_batch_buffer_try_push(b, &m), TIDEMARK_STATUS_NULL_ARGUMENT);
  m.len = 0; /* an empty payload may have a NULL pointer */
  CHECK_OK(tidemark_batch_buffer_try_push(b, &m));
  CHECK_STATUS(tidemark_batch_buffer_try_push(NULL, &m), TIDEMARK_STATUS_NULL_ARGUMENT);
  size_t accepted = 9;
  tidemark_status refusal = TIDEMARK_STATUS_PANIC;
  CHECK_STATUS(tidemark_batch_buffer_push_many(b, NULL, 2, &accepted, &refusal),
               TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK(accepted == 9 && refusal == TIDEMARK_STATUS_PANIC);
  tidemark_batch *batch = NULL;
  uint64_t wait_us = 0;
  CHECK_STATUS(tidemark_batch_buffer_poll_batch(b, NULL, &wait_us), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_batch_buffer_poll_batch(b, &batch, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_batch_buffer_ack(b, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_batch_info(NULL, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_batch_buffer_stop(b, 0, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_STATUS(tidemark_stop_report_counts(NULL, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);

  /* NULL frees are no-ops. */
  tidemark_tracker_free(NULL);
  tidemark_batch_buffer_free(NULL);
  tidemark_batch_free(NULL);
  tidemark_stop_report_free(NULL);

  /* UINT64_MAX means "no deadline": it saturates, never overflows. Deliver the one message
   * first, so the stop has nothing to wait for. */
  CHECK_OK(tidemark_batch_buffer_flush(b, 0) == TIDEMARK_STATUS_TIMEOUT ? TIDEMARK_STATUS_OK
                                                                         : TIDEMARK_STATUS_PANIC);
  CHECK_OK(tidemark_batch_buffer_poll_batch(b, &batch, &wait_us));
  CHECK_OK(tidemark_batch_buffer_ack(b, batch));
  CHECK_OK(tidemark_batch_buffer_flush(b, UINT64_MAX));
  tidemark_stop_report *r = NULL;
  CHECK_OK(tidemark_batch_buffer_begin_stop(b, UINT64_MAX));
  CHECK_OK(tidemark_batch_buffer_stop(b, UINT64_MAX, &r));
  tidemark_stop_counts counts;
  CHECK_OK(tidemark_stop_report_counts(r, &counts));
  CHECK(counts.accepted == 1 && counts.delivered == 1 && counts.handed_back == 0 &&
        !counts.timed_out);
  tidemark_stop_report_free(r);
  tidemark_batch_buffer_free(b);
  tidemark_tracker_free(t);
}

static void test_foreign_and_misaligned_handles(void) {
  tidemark_tracker_options o;
  tidemark_tracker *t = NULL;
  tidemark_batch_config c;
  tidemark_batch_buffer *b = NULL;
  CHECK_OK(tidemark_tracker_options_default(&o));
  CHECK_OK(tidemark_tracker_new(&o, &t));
  CHECK_OK(tidemark_batch_config_default(&c));
  CHECK_OK(tidemark_batch_buffer_new(&c, &b));

  /* A handle of another type is refused, not used. */
  tidemark_message m = {(const uint8_t *)"x", 1, {0, 0}, false};
  CHECK_STATUS(tidemark_batch_buffer_try_push((const tidemark_batch_buffer *)(const void *)t, &m),
               TIDEMARK_STATUS_INVALID_HANDLE);
  uint64_t ack = 3;
  CHECK_STATUS(tidemark_tracker_ack((const tidemark_tracker *)(const void *)b, &ack),
               TIDEMARK_STATUS_INVALID_HANDLE);
  CHECK(ack == 3);
  c.link_tracker = (const tidemark_tracker *)(const void *)b;
  tidemark_batch_buffer *b2 = NULL;
  CHECK_STATUS(tidemark_batch_buffer_new(&c, &b2), TIDEMARK_STATUS_INVALID_HANDLE);
  CHECK(b2 == NULL);
  /* Freeing through the wrong type is refused too (and frees nothing). */
  tidemark_stop_report_free((tidemark_stop_report *)(void *)t);
  CHECK_STATUS(tidemark_tracker_ack(t, &ack), TIDEMARK_STATUS_EMPTY);

  /* Misaligned pointers. */
  uint64_t words[4] = {0, 0, 0, 0};
  const tidemark_tracker *odd = (const tidemark_tracker *)(const void *)((const char *)words + 1);
  CHECK_STATUS(tidemark_tracker_ack(odd, &ack), TIDEMARK_STATUS_INVALID_HANDLE);
  tidemark_writer_id odd_w = 9;
  CHECK_STATUS(tidemark_tracker_register_if_allocated(odd, &odd_w), TIDEMARK_STATUS_INVALID_HANDLE);
  CHECK(odd_w == 9);
  /* Readable, aligned, but not a handle. */
  CHECK_STATUS(tidemark_tracker_ack((const tidemark_tracker *)(const void *)words, &ack),
               TIDEMARK_STATUS_INVALID_HANDLE);
  uint64_t *odd_out = (uint64_t *)(void *)((char *)words + 4);
  CHECK_STATUS(tidemark_tracker_ack_generation(t, odd_out), TIDEMARK_STATUS_INVALID_ARGUMENT);

  tidemark_batch_buffer_free(b);
  tidemark_tracker_free(t);
}

static void test_tracker_refusals(void) {
  tidemark_tracker_options o;
  tidemark_tracker *t = NULL;
  CHECK_OK(tidemark_tracker_options_default(&o));
  o.max_writers = 0;
  CHECK_STATUS(tidemark_tracker_new(&o, &t), TIDEMARK_STATUS_INVALID_ARGUMENT);
  o.max_writers = 2;
  o.expected_writers = 3;
  CHECK_STATUS(tidemark_tracker_new(&o, &t), TIDEMARK_STATUS_INVALID_ARGUMENT);
  o.expected_writers = 0;
  o.has_initial_ack = true;
  o.initial_ack = UINT64_MAX;
  CHECK_STATUS(tidemark_tracker_new(&o, &t), TIDEMARK_STATUS_INVALID_ARGUMENT);
  CHECK(t == NULL);
  o.has_initial_ack = false;
  CHECK_OK(tidemark_tracker_new(&o, &t));

  tidemark_writer_id a, b, c;
  CHECK_OK(tidemark_tracker_register(t, &a));
  CHECK_OK(tidemark_tracker_register(t, &b));
  CHECK_STATUS(tidemark_tracker_register(t, &c), TIDEMARK_STATUS_CAPACITY);

  tidemark_offset o10 = {10, 0}, o9 = {9, 5}, max = {UINT64_MAX, 0};
  CHECK_OK(tidemark_tracker_commit(t, o10, &a, 1, 0));
  CHECK_STATUS(tidemark_tracker_commit(t, o10, &a, 1, 0), TIDEMARK_STATUS_OFFSET_REGRESSED);
  CHECK_STATUS(tidemark_tracker_commit(t, o9, &b, 1, 0), TIDEMARK_STATUS_OFFSET_REGRESSED);
  CHECK_STATUS(tidemark_tracker_commit(t, max, &b, 1, 0), TIDEMARK_STATUS_INVALID_ARGUMENT);
  tidemark_writer_status s;
  CHECK_OK(tidemark_tracker_writer_status(t, b, &s));
  CHECK(s.state == TIDEMARK_WRITER_STATE_IDLE); /* refused commits changed nothing */

  /* Stale ids: unregistered, then the slot reused by a new registration. */
  CHECK_OK(tidemark_tracker_unregister(t, b));
  CHECK_STATUS(tidemark_tracker_touch(t, b, 0), TIDEMARK_STATUS_UNKNOWN_WRITER);
  CHECK_STATUS(tidemark_tracker_unregister(t, b), TIDEMARK_STATUS_UNKNOWN_WRITER);
  CHECK_OK(tidemark_tracker_register(t, &c));
  CHECK(c != b);
  CHECK_STATUS(tidemark_tracker_flushed(t, b, o10, 0), TIDEMARK_STATUS_UNKNOWN_WRITER);
  tidemark_offset o11 = {11, 0};
  tidemark_writer_id both[2] = {c, b};
  CHECK_STATUS(tidemark_tracker_commit(t, o11, both, 2, 0), TIDEMARK_STATUS_UNKNOWN_WRITER);
  CHECK_OK(tidemark_tracker_writer_status(t, c, &s));
  CHECK(s.state == TIDEMARK_WRITER_STATE_IDLE); /* the refused commit did not reach c */
  CHECK_STATUS(tidemark_tracker_pause(t, 12345), TIDEMARK_STATUS_UNKNOWN_WRITER);
  CHECK_STATUS(tidemark_tracker_down(t, a, 7, 0), TIDEMARK_STATUS_INVALID_ARGUMENT);
  CHECK_OK(tidemark_tracker_writer_status(t, a, &s));
  CHECK(s.state == TIDEMARK_WRITER_STATE_PENDING);

  /* Evicted ids are refused until unregistered. */
  CHECK_OK(tidemark_tracker_down(t, a, TIDEMARK_DOWN_CLASS_CRASH, 0));
  CHECK_STATUS(tidemark_tracker_flushed(t, a, o10, 0), TIDEMARK_STATUS_EVICTED_WRITER);
  CHECK_STATUS(tidemark_tracker_remove(t, a), TIDEMARK_STATUS_EVICTED_WRITER);
  CHECK_STATUS(tidemark_tracker_touch(t, a, 0), TIDEMARK_STATUS_EVICTED_WRITER);
  tidemark_tracker_free(t);
}

static void test_batch_refusals(void) {
  tidemark_batch_config c;
  tidemark_batch_buffer *b = NULL;
  CHECK_OK(tidemark_batch_config_default(&c));
  c.max_messages = 0;
  CHECK_STATUS(tidemark_batch_buffer_new(&c, &b), TIDEMARK_STATUS_INVALID_ARGUMENT);
  CHECK_OK(tidemark_batch_config_default(&c));
  c.capacity_messages = c.max_messages - 1;
  CHECK_STATUS(tidemark_batch_buffer_new(&c, &b), TIDEMARK_STATUS_INVALID_ARGUMENT);
  CHECK_OK(tidemark_batch_config_default(&c));
  c.capacity_messages = (size_t)1 << 30;
  CHECK_STATUS(tidemark_batch_buffer_new(&c, &b), TIDEMARK_STATUS_INVALID_ARGUMENT);
  CHECK(b == NULL);

  CHECK_OK(tidemark_batch_config_default(&c));
  c.max_messages = 2;
  c.max_bytes = 8;
  c.capacity_messages = 4;
  c.capacity_bytes = 16;
  c.linger_us = 3600ull * 1000 * 1000;
  CHECK_OK(tidemark_batch_buffer_new(&c, &b));
  uint8_t big[17] = {0};
  tidemark_message m = {big, sizeof big, {0, 0}, false};
  CHECK_STATUS(tidemark_batch_buffer_try_push(b, &m), TIDEMARK_STATUS_TOO_LARGE);
  m.len = 4;
  for (int i = 0; i < 4; i++) CHECK_OK(tidemark_batch_buffer_try_push(b, &m));
  CHECK_STATUS(tidemark_batch_buffer_try_push(b, &m), TIDEMARK_STATUS_FULL);
  CHECK_STATUS(tidemark_batch_buffer_push_timeout(b, &m, 10), TIDEMARK_STATUS_FULL);

  /* Caller arrays too small: nothing written. */
  tidemark_batch *batch = NULL;
  uint64_t wait_us;
  CHECK_OK(tidemark_batch_buffer_poll_batch(b, &batch, &wait_us));
  tidemark_message views[1];
  size_t n = 42;
  CHECK_STATUS(tidemark_batch_messages(batch, views, 1, &n), TIDEMARK_STATUS_BUFFER_TOO_SMALL);
  CHECK_STATUS(tidemark_batch_messages(batch, NULL, 0, &n), TIDEMARK_STATUS_BUFFER_TOO_SMALL);
  CHECK(n == 42);
  CHECK_STATUS(tidemark_batch_copy_payloads(batch, NULL, 0, &n), TIDEMARK_STATUS_BUFFER_TOO_SMALL);
  CHECK(n == 42);

  /* A batch acked on the wrong buffer: refused, and the batch handle is consumed. */
  tidemark_batch_buffer *other = NULL;
  CHECK_OK(tidemark_batch_config_default(&c));
  CHECK_OK(tidemark_batch_buffer_new(&c, &other));
  CHECK_STATUS(tidemark_batch_buffer_ack(other, batch), TIDEMARK_STATUS_NOT_IN_FLIGHT);

  /* Use while stopping and after stop. */
  CHECK_OK(tidemark_batch_buffer_begin_stop(b, 60000));
  CHECK_STATUS(tidemark_batch_buffer_try_push(b, &m), TIDEMARK_STATUS_STOPPING);
  tidemark_stop_report *r = NULL;
  CHECK_STATUS(tidemark_batch_buffer_poll_stop(b, &r), TIDEMARK_STATUS_WOULD_BLOCK);
  CHECK(r == NULL); /* the first batch is still in flight (its handle was dropped: unknown) */
  CHECK_OK(tidemark_batch_buffer_stop(b, 0, &r));
  tidemark_stop_counts counts;
  CHECK_OK(tidemark_stop_report_counts(r, &counts));
  CHECK(counts.accepted == 4 && counts.handed_back == 4 && counts.in_flight_unknown == 2);
  tidemark_stop_report_free(r);
  CHECK_STATUS(tidemark_batch_buffer_try_push(b, &m), TIDEMARK_STATUS_CLOSED);
  size_t accepted = 0;
  tidemark_status refusal = TIDEMARK_STATUS_OK;
  CHECK_OK(tidemark_batch_buffer_push_many(b, &m, 1, &accepted, &refusal));
  CHECK(accepted == 0 && refusal == TIDEMARK_STATUS_CLOSED);
  CHECK_STATUS(tidemark_batch_buffer_flush(b, 0), TIDEMARK_STATUS_CLOSED);
  CHECK_STATUS(tidemark_batch_buffer_poll_batch(b, &batch, &wait_us), TIDEMARK_STATUS_CLOSED);
  CHECK_STATUS(tidemark_batch_buffer_next_batch(b, 1, &batch), TIDEMARK_STATUS_CLOSED);
  tidemark_batch_buffer_free(b);
  CHECK_OK(tidemark_batch_buffer_stop(other, 0, &r));
  tidemark_stop_report_free(r);
  tidemark_batch_buffer_free(other);
}

/* Lying lengths and flags: refused before anything is read or copied, nothing changed. */
static void test_lying_lengths_and_flags(void) {
  tidemark_batch_config c;
  tidemark_batch_buffer *b = NULL;
  CHECK_OK(tidemark_batch_config_default(&c));
  c.capacity_bytes = 1024;
  c.max_bytes = 512;
  CHECK_OK(tidemark_batch_buffer_new(&c, &b));
  uint8_t bytes[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  /* 1 TiB claimed over 8 readable bytes: TOO_LARGE, the bytes are never read. */
  tidemark_message huge = {bytes, (size_t)1 << 40, {0, 0}, false};
  CHECK_STATUS(tidemark_batch_buffer_try_push(b, &huge), TIDEMARK_STATUS_TOO_LARGE);
  CHECK_STATUS(tidemark_batch_buffer_push_timeout(b, &huge, 0), TIDEMARK_STATUS_TOO_LARGE);
  huge.len = SIZE_MAX;
  CHECK_STATUS(tidemark_batch_buffer_try_push(b, &huge), TIDEMARK_STATUS_TOO_LARGE);
  /* push_many: the prefix before the lying message is taken, then TOO_LARGE. */
  tidemark_message many[3] = {{bytes, 8, {0, 0}, false}, {bytes, 8, {0, 0}, false}, huge};
  size_t accepted = 99;
  tidemark_status refusal = TIDEMARK_STATUS_OK;
  CHECK_OK(tidemark_batch_buffer_push_many(b, many, 3, &accepted, &refusal));
  CHECK(accepted == 2 && refusal == TIDEMARK_STATUS_TOO_LARGE);
  /* Together above capacity_bytes: FULL at the first that does not fit with the others. */
  static uint8_t kib[1020];
  tidemark_message fat[3] = {{bytes, 8, {0, 0}, false}, {kib, 1020, {0, 0}, false}, huge};
  fat[2].len = 1000;
  fat[2].data = NULL; /* never read: past what the buffer could hold with the others */
  CHECK_OK(tidemark_batch_buffer_push_many(b, fat, 3, &accepted, &refusal));
  CHECK(accepted == 1 && refusal == TIDEMARK_STATUS_FULL);
  /* A has_offset byte of 2 (memory can hold it; C assignment cannot): INVALID_ARGUMENT. */
  tidemark_message odd = {bytes, 8, {5, 0}, false};
  memset(&odd.has_offset, 2, 1);
  CHECK_STATUS(tidemark_batch_buffer_try_push(b, &odd), TIDEMARK_STATUS_INVALID_ARGUMENT);
  tidemark_message two[2] = {{bytes, 8, {0, 0}, false}, odd};
  accepted = 99;
  CHECK_STATUS(tidemark_batch_buffer_push_many(b, two, 2, &accepted, &refusal),
               TIDEMARK_STATUS_INVALID_ARGUMENT);
  CHECK(accepted == 99); /* nothing taken, nothing written */
  tidemark_batch_buffer_counters st;
  CHECK_OK(tidemark_batch_buffer_stats(b, &st));
  /* Every refusal is counted, also those decided on the length alone. */
  CHECK(st.accepted == 3 && st.rejected_too_large == 4 && st.rejected_full == 2);
  tidemark_stop_report *r = NULL;
  CHECK_OK(tidemark_batch_buffer_stop(b, 0, &r));
  tidemark_stop_report_free(r);
  tidemark_batch_buffer_free(b);

  tidemark_tracker_options o;
  tidemark_tracker *t = NULL;
  CHECK_OK(tidemark_tracker_options_default(&o));
  memset(&o.has_initial_ack, 7, 1);
  CHECK_STATUS(tidemark_tracker_new(&o, &t), TIDEMARK_STATUS_INVALID_ARGUMENT);
  CHECK(t == NULL);
}

int main(void) {
  test_null_arguments();
  test_foreign_and_misaligned_handles();
  test_tracker_refusals();
  test_batch_refusals();
  test_lying_lengths_and_flags();
  return check_summary("errors_test");
}
