/* Tracker scenarios through the C ABI: ack advance, a killed writer evicted by a sweep, a wedged
 * writer challenged then evicted, batch flush reports, events, pinning, stats, version,
 * registration without allocation. */
#include <string.h>

#include "check.h"

static tidemark_tracker *new_tracker(uint64_t grace_ms) {
  tidemark_tracker_options o;
  tidemark_tracker *t = NULL;
  REQUIRE(tidemark_tracker_options_default(&o) == TIDEMARK_STATUS_OK);
  o.stall_grace_ms = grace_ms;
  REQUIRE(tidemark_tracker_new(&o, &t) == TIDEMARK_STATUS_OK);
  REQUIRE(t != NULL);
  return t;
}

static tidemark_offset off(uint64_t tx) {
  tidemark_offset o;
  o.tx = tx;
  o.op = 0;
  return o;
}

static uint64_t ack_of(const tidemark_tracker *t) {
  uint64_t a = UINT64_MAX;
  CHECK_OK(tidemark_tracker_ack(t, &a));
  return a;
}

static void test_version(void) {
  char expected[64];
  snprintf(expected, sizeof expected, "%d.%d.%d", TIDEMARK_VERSION_MAJOR, TIDEMARK_VERSION_MINOR,
           TIDEMARK_VERSION_PATCH);
  CHECK(strcmp(tidemark_version(), expected) == 0);
  CHECK(strcmp(tidemark_status_message(TIDEMARK_STATUS_OK), "ok") == 0);
  CHECK(strcmp(tidemark_status_message(9999), "unknown status") == 0);
  CHECK(tidemark_monotonic_ms() <= tidemark_monotonic_ms());
}

static void test_ack_advance(void) {
  tidemark_tracker *t = new_tracker(60000);
  tidemark_writer_id a, b;
  uint64_t ack = 12345;
  CHECK_STATUS(tidemark_tracker_ack(t, &ack), TIDEMARK_STATUS_EMPTY);
  CHECK(ack == 12345); /* not written on EMPTY */
  CHECK_OK(tidemark_tracker_register(t, &a));
  CHECK_OK(tidemark_tracker_register(t, &b));
  CHECK(a != b);

  tidemark_writer_id both[2] = {a, b};
  CHECK_OK(tidemark_tracker_commit(t, off(10), both, 2, 0));
  CHECK(ack_of(t) == 9); /* every commit below 10 is (vacuously) flushed */
  CHECK_OK(tidemark_tracker_flushed(t, a, off(10), 1));
  CHECK(ack_of(t) == 9); /* b still owes 10 */
  CHECK_OK(tidemark_tracker_flushed(t, b, off(10), 2));
  CHECK(ack_of(t) == 10);

  CHECK_OK(tidemark_tracker_commit(t, off(20), &a, 1, 3));
  CHECK_OK(tidemark_tracker_commit(t, off(30), &b, 1, 4));
  CHECK_OK(tidemark_tracker_flushed(t, b, off(30), 5));
  CHECK(ack_of(t) == 19); /* a pins 20 */

  tidemark_pinning p;
  CHECK_OK(tidemark_tracker_pinning(t, 6, &p));
  CHECK(p.writer == a && p.owes.tx == 20 && !p.challenged && !p.orphaned);

  uint64_t gen0 = 0, gen1 = 0;
  CHECK_OK(tidemark_tracker_ack_generation(t, &gen0));
  CHECK_OK(tidemark_tracker_flushed(t, a, off(20), 7));
  CHECK(ack_of(t) == 30);
  CHECK_OK(tidemark_tracker_ack_generation(t, &gen1));
  CHECK(gen1 > gen0);
  CHECK_STATUS(tidemark_tracker_pinning(t, 8, &p), TIDEMARK_STATUS_EMPTY);

  uint64_t waited = 0;
  CHECK_OK(tidemark_tracker_wait_ack(t, 29, true, 0, &waited));
  CHECK(waited == 30);
  CHECK_STATUS(tidemark_tracker_wait_ack(t, 30, true, 5, &waited), TIDEMARK_STATUS_TIMEOUT);

  tidemark_offset last;
  CHECK_OK(tidemark_tracker_last_seen(t, &last));
  CHECK(last.tx == 30);

  tidemark_tracker_counters s;
  CHECK_OK(tidemark_tracker_stats(t, 9, &s));
  CHECK(s.has_ack && s.ack == 30 && s.commits == 3 && s.flushes == 4 && s.pending == 0);
  CHECK(s.registered == 2 && s.memory_bytes > 0);
  tidemark_tracker_free(t);
}

static void test_initial_ack_floor(void) {
  tidemark_tracker_options o;
  tidemark_tracker *t = NULL;
  CHECK_OK(tidemark_tracker_options_default(&o));
  o.initial_ack = 500;
  o.has_initial_ack = true;
  CHECK_OK(tidemark_tracker_new(&o, &t));
  CHECK(ack_of(t) == 500);
  tidemark_tracker_free(t);
}

static size_t take_events(const tidemark_tracker *t, tidemark_event *ev, size_t cap) {
  size_t n = 0;
  CHECK_OK(tidemark_tracker_take_events(t, ev, cap, &n));
  return n;
}

static void test_killed_writer_evicted_by_sweep(void) {
  const uint64_t grace = 100;
  tidemark_tracker *t = new_tracker(grace);
  tidemark_writer_id killed, healthy;
  CHECK_OK(tidemark_tracker_register(t, &killed));
  CHECK_OK(tidemark_tracker_register(t, &healthy));
  tidemark_writer_id both[2] = {killed, healthy};
  CHECK_OK(tidemark_tracker_commit(t, off(10), both, 2, 1000));
  CHECK_OK(tidemark_tracker_flushed(t, healthy, off(10), 1001));
  CHECK(ack_of(t) == 9);

  /* A monitor saw the process exit: teardown keeps it pinned until the grace period passes. */
  CHECK_OK(tidemark_tracker_down(t, killed, TIDEMARK_DOWN_CLASS_TEARDOWN, 1002));
  tidemark_sweep_outcome out;
  CHECK_OK(tidemark_tracker_sweep(t, 1050, &out));
  CHECK(out.evicted == 0);
  CHECK(ack_of(t) == 9);
  CHECK_OK(tidemark_tracker_sweep(t, 1000 + grace + 1, &out));
  CHECK(out.evicted == 1 && out.challenged == 0);
  CHECK(ack_of(t) == 10);

  tidemark_event ev[8];
  size_t n = take_events(t, ev, 8);
  REQUIRE(n == 1);
  CHECK(ev[0].kind == TIDEMARK_EVENT_KIND_EVICTED && ev[0].writer == killed &&
        ev[0].reason == TIDEMARK_EVICT_REASON_ORPHANED);
  CHECK(take_events(t, ev, 8) == 0);

  tidemark_writer_status ws;
  CHECK_OK(tidemark_tracker_writer_status(t, killed, &ws));
  CHECK(ws.state == TIDEMARK_WRITER_STATE_EVICTED && ws.reason == TIDEMARK_EVICT_REASON_ORPHANED);
  CHECK_STATUS(tidemark_tracker_flushed(t, killed, off(10), 1200), TIDEMARK_STATUS_EVICTED_WRITER);
  CHECK_STATUS(tidemark_tracker_commit(t, off(11), &killed, 1, 1200),
               TIDEMARK_STATUS_EVICTED_WRITER);
  CHECK_OK(tidemark_tracker_unregister(t, killed));
  CHECK_STATUS(tidemark_tracker_flushed(t, killed, off(10), 1200), TIDEMARK_STATUS_UNKNOWN_WRITER);

  /* A crash-class down unpins at once, without a sweep. */
  CHECK_OK(tidemark_tracker_commit(t, off(20), &healthy, 1, 1300));
  CHECK(ack_of(t) == 19);
  CHECK_OK(tidemark_tracker_down(t, healthy, TIDEMARK_DOWN_CLASS_CRASH, 1301));
  CHECK(ack_of(t) == 20);
  n = take_events(t, ev, 8);
  CHECK(n == 1 && ev[0].kind == TIDEMARK_EVENT_KIND_EVICTED &&
        ev[0].reason == TIDEMARK_EVICT_REASON_CRASHED);

  tidemark_tracker_counters s;
  CHECK_OK(tidemark_tracker_stats(t, 1400, &s));
  CHECK(s.evicted_orphaned == 1 && s.evicted_crashed == 1 && s.evicted_stalled == 0);
  tidemark_tracker_free(t);
}

static void test_wedged_writer_challenged_then_evicted(void) {
  const uint64_t grace = 100;
  tidemark_tracker *t = new_tracker(grace);
  tidemark_writer_id wedged, answering;
  CHECK_OK(tidemark_tracker_register(t, &wedged));
  CHECK_OK(tidemark_tracker_register(t, &answering));
  CHECK_OK(tidemark_tracker_commit(t, off(40), &wedged, 1, 2000));
  CHECK_OK(tidemark_tracker_commit(t, off(50), &answering, 1, 2000));

  tidemark_sweep_outcome out;
  CHECK_OK(tidemark_tracker_sweep(t, 2050, &out));
  CHECK(out.challenged == 0 && out.evicted == 0);
  CHECK_OK(tidemark_tracker_sweep(t, 2000 + grace + 1, &out));
  CHECK(out.challenged == 2 && out.evicted == 0);

  tidemark_event ev[8];
  size_t n = take_events(t, ev, 8);
  CHECK(n == 2);
  for (size_t i = 0; i < n; i++) {
    CHECK(ev[i].kind == TIDEMARK_EVENT_KIND_CHALLENGED);
    CHECK(ev[i].reason == TIDEMARK_EVICT_REASON_NONE);
  }
  tidemark_pinning p;
  CHECK_OK(tidemark_tracker_pinning(t, 2110, &p));
  CHECK(p.writer == wedged && p.challenged);

  /* One answers the challenge; the wedged one never does. */
  CHECK_OK(tidemark_tracker_touch(t, answering, 2150));
  CHECK_OK(tidemark_tracker_sweep(t, 2000 + 2 * grace + 2, &out));
  CHECK(out.evicted == 1);
  n = take_events(t, ev, 8);
  CHECK(n == 1 && ev[0].writer == wedged && ev[0].kind == TIDEMARK_EVENT_KIND_EVICTED &&
        ev[0].reason == TIDEMARK_EVICT_REASON_STALLED);
  CHECK(ack_of(t) == 49); /* 40 no longer pinned; 50 still owed by the live writer */

  tidemark_writer_status ws;
  CHECK_OK(tidemark_tracker_writer_status(t, answering, &ws));
  CHECK(ws.state == TIDEMARK_WRITER_STATE_PENDING);

  /* A paused writer is neither challenged nor evicted. */
  CHECK_OK(tidemark_tracker_pause(t, answering));
  CHECK_OK(tidemark_tracker_sweep(t, 9000, &out));
  CHECK(out.challenged == 0 && out.evicted == 0);
  CHECK_OK(tidemark_tracker_resume(t, answering, 9000));
  CHECK_OK(tidemark_tracker_flushed(t, answering, off(50), 9001));
  CHECK(ack_of(t) == 50);
  tidemark_tracker_free(t);
}

static void test_flushed_many(void) {
  tidemark_tracker *t = new_tracker(60000);
  enum { N = 16 };
  tidemark_writer_id w[N];
  tidemark_offset offs[N];
  tidemark_status st[N];
  for (int i = 0; i < N; i++) CHECK_OK(tidemark_tracker_register(t, &w[i]));
  for (int i = 0; i < N; i++) CHECK_OK(tidemark_tracker_commit(t, off(100 + (uint64_t)i), &w[i], 1, 0));
  for (int i = 0; i < N; i++) offs[i] = off(100 + (uint64_t)i);
  offs[3] = off(1); /* a partial report: progress, but writer 3 still owes 103 */
  w[5] = w[5] ^ ((uint64_t)1 << 40); /* a generation that was never issued: stale */
  size_t failed = 999;
  CHECK_OK(tidemark_tracker_flushed_many(t, w, offs, N, 1, st, &failed));
  CHECK(failed == 1);
  CHECK(st[5] == TIDEMARK_STATUS_UNKNOWN_WRITER);
  for (int i = 0; i < N; i++) {
    if (i != 5) CHECK(st[i] == TIDEMARK_STATUS_OK);
  }
  CHECK(ack_of(t) == 102); /* writer 3 flushed only up to 1: it pins 103 */
  /* A report below an earlier one is accepted and changes nothing. */
  offs[3] = off(0);
  CHECK_OK(tidemark_tracker_flushed_many(t, &w[3], &offs[3], 1, 2, st, &failed));
  CHECK(failed == 0 && st[0] == TIDEMARK_STATUS_OK);
  CHECK(ack_of(t) == 102);
  /* n == 0 takes NULL arrays. */
  CHECK_OK(tidemark_tracker_flushed_many(t, NULL, NULL, 0, 3, NULL, &failed));
  CHECK(failed == 0);
  tidemark_tracker_free(t);
}

/* A long-pinned head released under a small call budget: each call examines at most the budget,
 * the rest is left as a backlog that run_backlog finishes; the ack ends exact. */
static void test_budgeted_release(void) {
  tidemark_tracker *t = new_tracker(60000);
  tidemark_writer_id a, b;
  CHECK_OK(tidemark_tracker_register(t, &a));
  CHECK_OK(tidemark_tracker_register(t, &b));
  CHECK(tidemark_tracker_set_call_budget(t, 0) == TIDEMARK_STATUS_INVALID_ARGUMENT);
  CHECK(tidemark_tracker_set_call_budget(NULL, 4) == TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_OK(tidemark_tracker_set_call_budget(t, 4));
  CHECK_OK(tidemark_tracker_commit(t, off(1), &a, 1, 0));
  for (uint64_t tx = 2; tx <= 101; tx++) {
    CHECK_OK(tidemark_tracker_commit(t, off(tx), &b, 1, 0));
    CHECK_OK(tidemark_tracker_flushed(t, b, off(tx), 0));
  }
  CHECK(ack_of(t) == 0); /* a pins 1 */
  CHECK_OK(tidemark_tracker_flushed(t, a, off(1), 0));
  tidemark_work_stats w;
  CHECK(tidemark_tracker_work_stats(t, NULL) == TIDEMARK_STATUS_NULL_ARGUMENT);
  CHECK_OK(tidemark_tracker_work_stats(t, &w));
  CHECK(w.budget == 4 && w.max_call_work <= 4 && w.backlog && w.backlogs >= 1);
  uint64_t mid = ack_of(t);
  CHECK(mid >= 1 && mid < 101); /* safe, not yet exact */
  bool has = false, more = true;
  CHECK_OK(tidemark_tracker_has_backlog(t, &has));
  CHECK(has);
  CHECK(tidemark_tracker_run_backlog(t, NULL) == TIDEMARK_STATUS_NULL_ARGUMENT);
  int calls = 0;
  while (more && calls < 1000) {
    CHECK_OK(tidemark_tracker_run_backlog(t, &more));
    calls++;
  }
  CHECK(!more && calls >= 100 / 4 - 2); /* about one call per budget's worth */
  CHECK(ack_of(t) == 101);
  CHECK_OK(tidemark_tracker_work_stats(t, &w));
  CHECK(!w.backlog && w.max_call_work <= 4 && w.log_len == 0);
  CHECK_OK(tidemark_tracker_has_backlog(t, &has));
  CHECK(!has);
  tidemark_tracker_free(t);
}

static uint64_t registered_of(const tidemark_tracker *t) {
  tidemark_tracker_counters s;
  memset(&s, 0, sizeof s);
  CHECK_OK(tidemark_tracker_stats(t, 0, &s));
  return s.registered;
}

/* tidemark_tracker_register_if_allocated: the expected_writers slots are there without any
 * allocation; once the table would have to grow it declines with WOULD_BLOCK and changes
 * nothing; the allocating register then succeeds. Counts only. */
static void test_register_if_allocated(void) {
  enum { N = 64, BOUND = 4096 };
  tidemark_tracker_options o;
  tidemark_tracker *t = NULL;
  CHECK_OK(tidemark_tracker_options_default(&o));
  o.expected_writers = N;
  o.max_writers = 2 * BOUND;
  CHECK_OK(tidemark_tracker_new(&o, &t));
  REQUIRE(t != NULL);

  tidemark_writer_id w = 0, prev = 0;
  int ok = 0;
  for (int i = 0; i < N; i++) {
    w = 0;
    CHECK_OK(tidemark_tracker_register_if_allocated(t, &w));
    if (i > 0)
      CHECK(w != prev);
    prev = w;
    ok++;
  }
  CHECK(ok == N);
  CHECK(registered_of(t) == N);

  /* Past the slots allocated up front the library may still have room (its table grows in
   * segments it sizes itself); within BOUND more registrations one must decline. */
  tidemark_status s = TIDEMARK_STATUS_OK;
  int more = 0;
  while (more < BOUND) {
    s = tidemark_tracker_register_if_allocated(t, &w);
    if (s != TIDEMARK_STATUS_OK)
      break;
    more++;
  }
  CHECK_STATUS(s, TIDEMARK_STATUS_WOULD_BLOCK);
  uint64_t before = registered_of(t);
  CHECK(before == (uint64_t)(N + more));

  /* Declined: nothing registered, *out untouched, and it keeps declining. */
  w = 777;
  CHECK_STATUS(tidemark_tracker_register_if_allocated(t, &w), TIDEMARK_STATUS_WOULD_BLOCK);
  CHECK(w == 777);
  CHECK_STATUS(tidemark_tracker_register_if_allocated(t, &w), TIDEMARK_STATUS_WOULD_BLOCK);
  CHECK(registered_of(t) == before);

  /* The allocating register grows the table; the new slots then need no allocation. */
  tidemark_writer_id grown = 0, after = 0;
  CHECK_OK(tidemark_tracker_register(t, &grown));
  CHECK(registered_of(t) == before + 1);
  CHECK_OK(tidemark_tracker_register_if_allocated(t, &after));
  CHECK(after != grown);
  CHECK(registered_of(t) == before + 2);

  /* A slot freed by unregister is reused without allocating. */
  tidemark_tracker_free(t);
  t = NULL;
  o.expected_writers = 1;
  o.max_writers = 2;
  CHECK_OK(tidemark_tracker_new(&o, &t));
  tidemark_writer_id a = 0, b = 0;
  CHECK_OK(tidemark_tracker_register_if_allocated(t, &a));
  CHECK_OK(tidemark_tracker_unregister(t, a));
  CHECK_OK(tidemark_tracker_register_if_allocated(t, &b));
  CHECK(b != a); /* a new generation of the slot */
  CHECK(registered_of(t) == 1);
  /* max_writers is checked first: CAPACITY, as for register. */
  tidemark_writer_id c = 0;
  CHECK_OK(tidemark_tracker_register(t, &c));
  c = 55;
  CHECK_STATUS(tidemark_tracker_register_if_allocated(t, &c), TIDEMARK_STATUS_CAPACITY);
  CHECK(c == 55);
  CHECK_STATUS(tidemark_tracker_register(t, &c), TIDEMARK_STATUS_CAPACITY);
  CHECK(registered_of(t) == 2);
  tidemark_tracker_free(t);
}

int main(void) {
  test_version();
  test_ack_advance();
  test_initial_ack_floor();
  test_killed_writer_evicted_by_sweep();
  test_wedged_writer_challenged_then_evicted();
  test_flushed_many();
  test_budgeted_release();
  test_register_if_allocated();
  return check_summary("tracker_test");
}
