/* Batch buffer scenarios through the C ABI: triggers, ack/nack, drain on stop with hand-back
 * (a stuck sink), a sink thread draining everything, push_many, packed pushes and batch views,
 * the notify callback, the tracker link. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "check.h"

static tidemark_message msg(const char *text, uint64_t tx) {
  tidemark_message m;
  m.data = (const uint8_t *)text;
  m.len = strlen(text);
  m.offset.tx = tx;
  m.offset.op = 0;
  m.has_offset = true;
  return m;
}

static tidemark_batch_buffer *new_buffer(size_t max_messages, uint64_t linger_us,
                                         size_t capacity_messages) {
  tidemark_batch_config c;
  tidemark_batch_buffer *b = NULL;
  REQUIRE(tidemark_batch_config_default(&c) == TIDEMARK_STATUS_OK);
  c.max_messages = max_messages;
  c.linger_us = linger_us;
  c.capacity_messages = capacity_messages;
  REQUIRE(tidemark_batch_buffer_new(&c, &b) == TIDEMARK_STATUS_OK);
  return b;
}

/* Checks a batch's messages are "m<first>".."m<first+n-1>" in order. */
static void check_batch(const tidemark_batch *batch, int first, size_t n) {
  tidemark_batch_summary s;
  tidemark_message views[64];
  size_t got = 0;
  CHECK_OK(tidemark_batch_info(batch, &s));
  CHECK(s.len == n);
  CHECK_OK(tidemark_batch_messages(batch, views, 64, &got));
  REQUIRE(got == n);
  for (size_t i = 0; i < n; i++) {
    char want[16];
    snprintf(want, sizeof want, "m%d", first + (int)i);
    CHECK(views[i].len == strlen(want) && memcmp(views[i].data, want, views[i].len) == 0);
    CHECK(views[i].has_offset && views[i].offset.tx == (uint64_t)(first + (int)i) + 1);
  }
  CHECK(s.has_offset && s.highest_offset.tx == (uint64_t)first + n);
}

static void push_range(const tidemark_batch_buffer *b, int from, int to) {
  char text[16];
  for (int i = from; i < to; i++) {
    snprintf(text, sizeof text, "m%d", i);
    tidemark_message m = msg(text, (uint64_t)i + 1);
    CHECK_OK(tidemark_batch_buffer_try_push(b, &m));
  }
}

static void test_stop_hands_back_in_order(void) {
  tidemark_batch_buffer *b = new_buffer(4, 3600ull * 1000 * 1000, 64);
  push_range(b, 0, 10);

  tidemark_batch *first = NULL, *stuck = NULL;
  uint64_t wait_us = 0;
  CHECK_OK(tidemark_batch_buffer_poll_batch(b, &first, &wait_us));
  REQUIRE(first != NULL);
  tidemark_batch_summary s;
  CHECK_OK(tidemark_batch_info(first, &s));
  CHECK(s.trigger == TIDEMARK_TRIGGER_COUNT);
  check_batch(first, 0, 4);
  CHECK_OK(tidemark_batch_buffer_ack(b, first));
  CHECK_OK(tidemark_batch_buffer_poll_batch(b, &stuck, &wait_us));
  REQUIRE(stuck != NULL);
  check_batch(stuck, 4, 4);
  /* m8, m9 wait for the (one-hour) linger. */
  tidemark_batch *none = NULL;
  CHECK_STATUS(tidemark_batch_buffer_poll_batch(b, &none, &wait_us), TIDEMARK_STATUS_WOULD_BLOCK);
  CHECK(none == NULL && wait_us > 1000ull * 1000 * 1000);

  /* The sink is stuck on `stuck`: stop with a short deadline hands back 4..9 in order. */
  tidemark_stop_report *r = NULL;
  CHECK_OK(tidemark_batch_buffer_stop(b, 30, &r));
  REQUIRE(r != NULL);
  tidemark_stop_counts c;
  CHECK_OK(tidemark_stop_report_counts(r, &c));
  CHECK(c.accepted == 10 && c.delivered == 4 && c.failed == 0 && c.handed_back == 6);
  CHECK(c.accepted == c.delivered + c.failed + c.handed_back);
  CHECK(c.timed_out && c.unknown_batches == 1 && c.in_flight_unknown == 4);

  /* Page through the hand-back three at a time. */
  tidemark_handed_back hb[3];
  size_t n = 0, seen = 0;
  for (size_t start = 0;; start += n) {
    CHECK_OK(tidemark_stop_report_handed_back(r, start, hb, 3, &n));
    if (n == 0) break;
    for (size_t i = 0; i < n; i++, seen++) {
      char want[16];
      snprintf(want, sizeof want, "m%d", 4 + (int)seen);
      CHECK(hb[i].message.len == strlen(want) &&
            memcmp(hb[i].message.data, want, hb[i].message.len) == 0);
      CHECK(hb[i].outcome_unknown == (seen < 4));
    }
  }
  CHECK(seen == 6);

  /* After the stop: the late ack is refused (the batch was handed back), pushes are closed. */
  CHECK_STATUS(tidemark_batch_buffer_ack(b, stuck), TIDEMARK_STATUS_NOT_IN_FLIGHT);
  tidemark_message m = msg("late", 99);
  CHECK_STATUS(tidemark_batch_buffer_try_push(b, &m), TIDEMARK_STATUS_CLOSED);
  CHECK_STATUS(tidemark_batch_buffer_poll_batch(b, &none, &wait_us), TIDEMARK_STATUS_CLOSED);
  tidemark_stop_report *again = NULL;
  CHECK_OK(tidemark_batch_buffer_poll_stop(b, &again));
  tidemark_stop_counts c2;
  CHECK_OK(tidemark_stop_report_counts(again, &c2));
  CHECK(c2.handed_back == 6); /* every caller gets the same report */
  tidemark_stop_report_free(again);

  tidemark_batch_buffer_free(b);
  /* The report owns its bytes: still readable after the buffer is gone. */
  CHECK_OK(tidemark_stop_report_handed_back(r, 5, hb, 3, &n));
  CHECK(n == 1 && hb[0].message.len == 2 && memcmp(hb[0].message.data, "m9", 2) == 0);
  tidemark_stop_report_free(r);
}

struct sink_args {
  tidemark_batch_buffer *b;
  unsigned long delivered;
  unsigned long next_expected;
  int out_of_order;
};

static void *sink_thread(void *p) {
  struct sink_args *a = p;
  for (;;) {
    tidemark_batch *batch = NULL;
    tidemark_status st = tidemark_batch_buffer_next_batch(a->b, 50, &batch);
    if (st == TIDEMARK_STATUS_CLOSED) break;
    if (st == TIDEMARK_STATUS_TIMEOUT) continue;
    if (st != TIDEMARK_STATUS_OK) {
      a->out_of_order++;
      break;
    }
    tidemark_message views[512];
    size_t n = 0;
    if (tidemark_batch_messages(batch, views, 512, &n) != TIDEMARK_STATUS_OK) a->out_of_order++;
    for (size_t i = 0; i < n; i++) {
      if (views[i].offset.tx != a->next_expected + 1) a->out_of_order++;
      a->next_expected = views[i].offset.tx;
    }
    a->delivered += n;
    if (tidemark_batch_buffer_ack(a->b, batch) != TIDEMARK_STATUS_OK) a->out_of_order++;
  }
  return NULL;
}

static void test_sink_thread_drains_everything(void) {
  tidemark_batch_buffer *b = new_buffer(64, 200, 1024);
  struct sink_args a = {b, 0, 0, 0};
  pthread_t th;
  REQUIRE(pthread_create(&th, NULL, sink_thread, &a) == 0);
  char text[32];
  unsigned long accepted = 0;
  for (int i = 0; i < 20000; i++) {
    snprintf(text, sizeof text, "payload-%d", i);
    tidemark_message m = msg(text, (uint64_t)i + 1);
    tidemark_status st = tidemark_batch_buffer_push_timeout(b, &m, 5000);
    CHECK(st == TIDEMARK_STATUS_OK);
    if (st == TIDEMARK_STATUS_OK) accepted++;
  }
  tidemark_stop_report *r = NULL;
  CHECK_OK(tidemark_batch_buffer_stop(b, 5000, &r));
  REQUIRE(pthread_join(th, NULL) == 0);
  tidemark_stop_counts c;
  CHECK_OK(tidemark_stop_report_counts(r, &c));
  CHECK(c.accepted == accepted && c.delivered == accepted && c.handed_back == 0 && !c.timed_out);
  CHECK(a.delivered == accepted && a.out_of_order == 0);
  tidemark_batch_buffer_counters s;
  CHECK_OK(tidemark_batch_buffer_stats(b, &s));
  CHECK(s.delivered == accepted && s.batches > 0 && s.queued_messages == 0);
  tidemark_stop_report_free(r);
  tidemark_batch_buffer_free(b);
}

static void test_push_many_nack_and_payload_copy(void) {
  tidemark_batch_buffer *b = new_buffer(8, 3600ull * 1000 * 1000, 8);
  tidemark_message ms[10];
  char texts[10][8];
  for (int i = 0; i < 10; i++) {
    snprintf(texts[i], sizeof texts[i], "m%d", i);
    ms[i] = msg(texts[i], (uint64_t)i + 1);
  }
  size_t accepted = 0;
  tidemark_status refusal = TIDEMARK_STATUS_PANIC;
  CHECK_OK(tidemark_batch_buffer_push_many(b, ms, 10, &accepted, &refusal));
  CHECK(accepted == 8 && refusal == TIDEMARK_STATUS_FULL);
  CHECK_OK(tidemark_batch_buffer_push_many(b, NULL, 0, &accepted, &refusal));
  CHECK(accepted == 0 && refusal == TIDEMARK_STATUS_OK);

  tidemark_batch *batch = NULL;
  uint64_t wait_us;
  CHECK_OK(tidemark_batch_buffer_poll_batch(b, &batch, &wait_us));
  check_batch(batch, 0, 8);

  char buf[64];
  size_t written = 0;
  CHECK_STATUS(tidemark_batch_copy_payloads(batch, (uint8_t *)buf, 3, &written), TIDEMARK_STATUS_BUFFER_TOO_SMALL);
  CHECK(written == 0);
  CHECK_OK(tidemark_batch_copy_payloads(batch, (uint8_t *)buf, sizeof buf, &written));
  CHECK(written == 16 && memcmp(buf, "m0m1m2m3m4m5m6m7", 16) == 0);

  /* Requeued messages come back first, in order. */
  CHECK_OK(tidemark_batch_buffer_nack(b, batch, true));
  CHECK_OK(tidemark_batch_buffer_poll_batch(b, &batch, &wait_us));
  check_batch(batch, 0, 8);
  /* Failed (no requeue): terminal, counted. */
  CHECK_OK(tidemark_batch_buffer_nack(b, batch, false));
  tidemark_batch_buffer_counters s;
  CHECK_OK(tidemark_batch_buffer_stats(b, &s));
  CHECK(s.failed == 8 && s.requeued == 8 && s.rejected_full == 2 && s.queued_messages == 0);

  /* Non-blocking stop. */
  CHECK_OK(tidemark_batch_buffer_begin_stop(b, 0));
  tidemark_stop_report *r = NULL;
  tidemark_status st;
  do {
    st = tidemark_batch_buffer_poll_stop(b, &r);
  } while (st == TIDEMARK_STATUS_WOULD_BLOCK);
  CHECK(st == TIDEMARK_STATUS_OK);
  tidemark_stop_counts c;
  CHECK_OK(tidemark_stop_report_counts(r, &c));
  CHECK(c.accepted == 8 && c.failed == 8 && c.handed_back == 0);
  tidemark_stop_report_free(r);
  tidemark_batch_buffer_free(b);
}

static void test_tracker_link(void) {
  tidemark_tracker_options o;
  tidemark_tracker *t = NULL;
  tidemark_writer_id w;
  CHECK_OK(tidemark_tracker_options_default(&o));
  CHECK_OK(tidemark_tracker_new(&o, &t));
  CHECK_OK(tidemark_tracker_register(t, &w));

  tidemark_batch_config c;
  tidemark_batch_buffer *b = NULL;
  CHECK_OK(tidemark_batch_config_default(&c));
  c.max_messages = 2;
  c.link_tracker = t;
  c.link_writer = w;
  CHECK_OK(tidemark_batch_buffer_new(&c, &b));
  /* The buffer holds its own reference: the tracker handle may go first. */
  tidemark_tracker_free(t);
  t = NULL;
  {
    tidemark_message x = msg("x", 1), y = msg("y", 2);
    tidemark_batch *early = NULL;
    uint64_t wait;
    CHECK_OK(tidemark_batch_buffer_try_push(b, &x));
    CHECK_OK(tidemark_batch_buffer_try_push(b, &y));
    CHECK_OK(tidemark_batch_buffer_poll_batch(b, &early, &wait));
    /* The writer owes nothing in that tracker: the report is accepted and changes nothing. */
    CHECK_OK(tidemark_batch_buffer_ack(b, early));
  }
  tidemark_stop_report *r0 = NULL;
  CHECK_OK(tidemark_batch_buffer_stop(b, 0, &r0));
  tidemark_stop_report_free(r0);
  tidemark_batch_buffer_free(b);

  CHECK_OK(tidemark_tracker_new(&o, &t));
  CHECK_OK(tidemark_tracker_register(t, &w));
  c.link_tracker = t;
  c.link_writer = w;
  CHECK_OK(tidemark_batch_buffer_new(&c, &b));
  tidemark_offset last = {5, 0};
  CHECK_OK(tidemark_tracker_commit(t, last, &w, 1, tidemark_monotonic_ms()));
  uint64_t ack = 0;
  CHECK_OK(tidemark_tracker_ack(t, &ack));
  CHECK(ack == 4);
  tidemark_message m1 = msg("a", 4), m2 = msg("b", 5);
  CHECK_OK(tidemark_batch_buffer_try_push(b, &m1));
  CHECK_OK(tidemark_batch_buffer_try_push(b, &m2));
  tidemark_batch *batch = NULL;
  uint64_t wait_us;
  CHECK_OK(tidemark_batch_buffer_poll_batch(b, &batch, &wait_us));
  CHECK_OK(tidemark_batch_buffer_ack(b, batch));
  CHECK_OK(tidemark_tracker_ack(t, &ack));
  CHECK(ack == 5); /* the ack of the batch reported offset 5 flushed for w */

  /* An evicted writer: the ack still delivers the batch, the report fails. */
  CHECK_OK(tidemark_tracker_commit(t, (tidemark_offset){6, 0}, &w, 1, tidemark_monotonic_ms()));
  CHECK_OK(tidemark_tracker_down(t, w, TIDEMARK_DOWN_CLASS_CRASH, tidemark_monotonic_ms()));
  tidemark_message m3 = msg("c", 6), m4 = msg("d", 6);
  CHECK_OK(tidemark_batch_buffer_try_push(b, &m3));
  CHECK_OK(tidemark_batch_buffer_try_push(b, &m4));
  CHECK_OK(tidemark_batch_buffer_poll_batch(b, &batch, &wait_us));
  CHECK_STATUS(tidemark_batch_buffer_ack(b, batch), TIDEMARK_STATUS_LINK_FAILED);
  tidemark_batch_buffer_counters s;
  CHECK_OK(tidemark_batch_buffer_stats(b, &s));
  CHECK(s.delivered == 4 && s.link_errors == 1);
  tidemark_stop_report *r = NULL;
  CHECK_OK(tidemark_batch_buffer_stop(b, 0, &r));
  tidemark_stop_report_free(r);
  tidemark_batch_buffer_free(b);
  tidemark_tracker_free(t);
}

static void on_notify(void *ctx) { __atomic_add_fetch((int *)ctx, 1, __ATOMIC_SEQ_CST); }

static void test_packed_push_view_and_notify(void) {
  tidemark_batch_buffer *b = new_buffer(4, 3600ull * 1000 * 1000, 6);
  int notified = 0;
  CHECK_OK(tidemark_batch_buffer_set_notify(b, on_notify, &notified));
  /* Armed with nothing buffered: WOULD_BLOCK, no linger pending. */
  tidemark_batch *batch = NULL;
  uint64_t wait_us = 0;
  CHECK_STATUS(tidemark_batch_buffer_poll_batch_notify(b, &batch, &wait_us), TIDEMARK_STATUS_WOULD_BLOCK);
  CHECK(batch == NULL && wait_us == UINT64_MAX);

  const char payload[] = "aabbbcdddd"; /* "aa" "bbb" "c" "" "dddd" packed back to back */
  tidemark_msg_desc d[5];
  const uint64_t lens[5] = {2, 3, 1, 0, 4};
  for (int i = 0; i < 5; i++) {
    d[i].len = lens[i];
    d[i].offset.tx = 10 + (uint64_t)i;
    d[i].offset.op = 0;
    d[i].has_offset = (i != 2);
  }
  size_t accepted = 99;
  tidemark_status refusal = TIDEMARK_STATUS_PANIC;
  /* Lying lengths (they do not add up to the payload) refuse the whole call. */
  CHECK_STATUS(tidemark_batch_buffer_push_packed(b, (const uint8_t *)payload, 9, d, 5, &accepted, &refusal),
               TIDEMARK_STATUS_INVALID_ARGUMENT);
  CHECK(accepted == 99 && refusal == TIDEMARK_STATUS_PANIC);
  CHECK_STATUS(tidemark_batch_buffer_push_packed(b, NULL, 10, d, 5, &accepted, &refusal),
               TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_OK(tidemark_batch_buffer_push_packed(b, (const uint8_t *)payload, 10, d, 5, &accepted, &refusal));
  CHECK(accepted == 5 && refusal == TIDEMARK_STATUS_OK);
  CHECK(__atomic_load_n(&notified, __ATOMIC_SEQ_CST) == 1); /* the first push woke the armed sink */
  /* Capacity 6: two more fit, the rest is refused FULL. */
  CHECK_OK(tidemark_batch_buffer_push_packed(b, (const uint8_t *)payload, 10, d, 5, &accepted, &refusal));
  CHECK(accepted == 1 && refusal == TIDEMARK_STATUS_FULL);

  CHECK_OK(tidemark_batch_buffer_poll_batch_notify(b, &batch, &wait_us));
  tidemark_batch_view v;
  CHECK_OK(tidemark_batch_get_view(batch, &v));
  CHECK(v.len == 4 && v.payload_len == 6 && memcmp(v.payload, "aabbbc", 6) == 0);
  CHECK(v.descs[0].len == 2 && v.descs[1].len == 3 && v.descs[2].len == 1 && v.descs[3].len == 0);
  CHECK(v.descs[1].has_offset && v.descs[1].offset.tx == 11 && !v.descs[2].has_offset);
  CHECK_STATUS(tidemark_batch_get_view(batch, NULL), TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_OK(tidemark_batch_buffer_ack(b, batch));
  /* The remaining two ("dddd" and the second call's "aa") are not a full batch: WOULD_BLOCK,
   * armed; an ack-free stop notifies the armed sink. */
  CHECK_STATUS(tidemark_batch_buffer_poll_batch_notify(b, &batch, &wait_us), TIDEMARK_STATUS_WOULD_BLOCK);
  int before = __atomic_load_n(&notified, __ATOMIC_SEQ_CST);
  CHECK_OK(tidemark_batch_buffer_begin_stop(b, 1000));
  CHECK(__atomic_load_n(&notified, __ATOMIC_SEQ_CST) == before + 1);
  CHECK_OK(tidemark_batch_buffer_poll_batch_notify(b, &batch, &wait_us));
  CHECK_OK(tidemark_batch_get_view(batch, &v));
  CHECK(v.len == 2 && v.payload_len == 6 && memcmp(v.payload, "ddddaa", 6) == 0);
  CHECK_OK(tidemark_batch_buffer_ack(b, batch));
  CHECK_STATUS(tidemark_batch_buffer_poll_batch_notify(b, &batch, &wait_us), TIDEMARK_STATUS_CLOSED);
  CHECK_OK(tidemark_batch_buffer_set_notify(b, NULL, NULL));
  tidemark_stop_report *r = NULL;
  CHECK_OK(tidemark_batch_buffer_poll_stop(b, &r));
  tidemark_stop_counts c;
  CHECK_OK(tidemark_stop_report_counts(r, &c));
  CHECK(c.accepted == 6 && c.delivered == 6 && c.handed_back == 0);
  tidemark_stop_report_free(r);
  tidemark_batch_buffer_free(b);
}

int main(void) {
  test_stop_hands_back_in_order();
  test_sink_thread_drains_everything();
  test_push_many_nack_and_payload_copy();
  test_packed_push_view_and_notify();
  test_tracker_link();
  return check_summary("batch_test");
}
