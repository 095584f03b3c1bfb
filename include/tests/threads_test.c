/* Concurrency through the C ABI: 1 committer, 2 flushers and 1 sweeper (which also checks) on
 * one tracker. The C side records what it has proven flushed *before* telling the tracker, so
 * at every sample `ack` must not pass a commit some live writer has not proven flushed. Two
 * writers wedge half-way; the sweeper must evict them (and no other: the grace period is long
 * enough that a descheduled flusher on a loaded 2-core machine is not mistaken for a wedged
 * one), and the final ack must reach the last commit. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "check.h"

enum { WRITERS = 64, COMMITS = 60000, WEDGED = 2, GRACE_MS = 250 };

struct commit_entry {
  uint64_t tx;
  int n;
  int writers[3];
};

static tidemark_tracker *tracker;
static tidemark_writer_id ids[WRITERS];
static struct commit_entry log_[COMMITS];
static atomic_size_t committed;                 /* entries of log_ published */
static atomic_uint_fast64_t delivered[WRITERS]; /* highest tx committed to the writer */
static atomic_uint_fast64_t proven[WRITERS];    /* highest tx the C side flushed */
static atomic_int committer_done;
static atomic_int flushers_done;
static atomic_int violations;
static atomic_ulong samples;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static int is_wedged(int w) { return w < WEDGED; }

static void *committer(void *arg) {
  (void)arg;
  for (size_t i = 0; i < COMMITS; i++) {
    struct commit_entry *e = &log_[i];
    e->tx = (uint64_t)i + 1;
    for (;;) {
      e->n = 1 + (int)(next_rand() % 3);
      tidemark_writer_id w[3];
      for (int k = 0; k < e->n; k++) {
        e->writers[k] = (int)(next_rand() % WRITERS);
        w[k] = ids[e->writers[k]];
      }
      tidemark_offset o = {e->tx, 0};
      tidemark_status st = tidemark_tracker_commit(tracker, o, w, (size_t)e->n, tidemark_monotonic_ms());
      if (st == TIDEMARK_STATUS_OK) break;
      /* A writer was evicted meanwhile: the refused commit changed nothing; pick others. */
      if (st != TIDEMARK_STATUS_EVICTED_WRITER) {
        fprintf(stderr, "commit: %s\n", tidemark_status_message(st));
        atomic_fetch_add(&violations, 1);
        break;
      }
    }
    for (int k = 0; k < e->n; k++) {
      int w = e->writers[k];
      if (atomic_load(&delivered[w]) < e->tx) atomic_store(&delivered[w], e->tx);
    }
    atomic_store_explicit(&committed, i + 1, memory_order_release);
  }
  atomic_store(&committer_done, 1);
  return NULL;
}

static void *flusher(void *arg) {
  int half = *(int *)arg;
  tidemark_writer_id batch_ids[WRITERS];
  tidemark_offset batch_offs[WRITERS];
  tidemark_status statuses[WRITERS];
  for (;;) {
    int done = atomic_load(&committer_done);
    size_t n = 0;
    for (int w = half; w < WRITERS; w += 2) {
      uint64_t d = atomic_load(&delivered[w]);
      if (d == 0 || d <= atomic_load(&proven[w])) continue;
      if (is_wedged(w) && d > COMMITS / 2) continue; /* wedged: never flushes again */
      atomic_store(&proven[w], d);                   /* proven before the tracker hears */
      if (next_rand() % 2) {
        tidemark_offset o = {d, 0};
        tidemark_status st = tidemark_tracker_flushed(tracker, ids[w], o, tidemark_monotonic_ms());
        if (st != TIDEMARK_STATUS_OK && st != TIDEMARK_STATUS_EVICTED_WRITER) atomic_fetch_add(&violations, 1);
      } else {
        batch_ids[n] = ids[w];
        batch_offs[n].tx = d;
        batch_offs[n].op = 0;
        n++;
      }
    }
    if (n > 0) {
      size_t failed = 0;
      if (tidemark_tracker_flushed_many(tracker, batch_ids, batch_offs, n, tidemark_monotonic_ms(),
                                        statuses, &failed) != TIDEMARK_STATUS_OK)
        atomic_fetch_add(&violations, 1);
      for (size_t i = 0; i < n; i++)
        if (statuses[i] != TIDEMARK_STATUS_OK && statuses[i] != TIDEMARK_STATUS_EVICTED_WRITER)
          atomic_fetch_add(&violations, 1);
    }
    if (done && n == 0) break;
  }
  atomic_fetch_add(&flushers_done, 1);
  return NULL;
}

/* Every commit at or below `ack` must be proven flushed by each writer, or that writer evicted. */
static size_t check_up_to(uint64_t ack, size_t from) {
  size_t published = atomic_load_explicit(&committed, memory_order_acquire);
  size_t i = from;
  for (; i < published && log_[i].tx <= ack; i++) {
    for (int k = 0; k < log_[i].n; k++) {
      int w = log_[i].writers[k];
      if (atomic_load(&proven[w]) >= log_[i].tx) continue;
      tidemark_writer_status s;
      if (tidemark_tracker_writer_status(tracker, ids[w], &s) == TIDEMARK_STATUS_OK &&
          s.state == TIDEMARK_WRITER_STATE_EVICTED)
        continue;
      fprintf(stderr, "ack %llu passed tx %llu, unflushed by writer %d\n", (unsigned long long)ack,
              (unsigned long long)log_[i].tx, w);
      atomic_fetch_add(&violations, 1);
    }
  }
  return i;
}

static void *sweeper(void *arg) {
  (void)arg;
  size_t verified = 0;
  uint64_t last_ack = 0;
  tidemark_event ev[16];
  unsigned long evicted = 0;
  for (;;) {
    uint64_t ack = 0;
    if (tidemark_tracker_ack(tracker, &ack) == TIDEMARK_STATUS_OK) {
      if (ack < last_ack) atomic_fetch_add(&violations, 1); /* the ack never moves back */
      last_ack = ack;
      verified = check_up_to(ack, verified);
      atomic_fetch_add(&samples, 1);
    }
    tidemark_sweep_outcome out;
    if (tidemark_tracker_sweep(tracker, tidemark_monotonic_ms(), &out) != TIDEMARK_STATUS_OK)
      atomic_fetch_add(&violations, 1);
    size_t n = 0;
    tidemark_tracker_take_events(tracker, ev, 16, &n);
    for (size_t i = 0; i < n; i++) {
      if (ev[i].kind == TIDEMARK_EVENT_KIND_EVICTED) {
        evicted++;
        int healthy = 1;
        for (int w = 0; w < WEDGED; w++)
          if (ids[w] == ev[i].writer) healthy = 0;
        if (healthy) {
          int idx = -1;
          for (int w = 0; w < WRITERS; w++)
            if (ids[w] == ev[i].writer) idx = w;
          fprintf(stderr, "healthy writer %d evicted (reason %u; delivered %llu, proven %llu)\n", idx,
                  (unsigned)ev[i].reason, (unsigned long long)atomic_load(&delivered[idx]),
                  (unsigned long long)atomic_load(&proven[idx]));
          atomic_fetch_add(&violations, 1);
        }
      }
    }
    if (atomic_load(&flushers_done) == 2 && ack == COMMITS) break;
    if (atomic_load(&flushers_done) == 2 && evicted >= WEDGED) {
      /* Everything is reported; wait for the drain to publish the last ack. */
      uint64_t final_ack = 0;
      if (tidemark_tracker_wait_ack(tracker, COMMITS - 1, true, 10, &final_ack) == TIDEMARK_STATUS_OK)
        continue;
    }
  }
  CHECK(evicted == WEDGED);
  return NULL;
}

int main(void) {
  tidemark_tracker_options o;
  CHECK_OK(tidemark_tracker_options_default(&o));
  o.stall_grace_ms = GRACE_MS;
  REQUIRE(tidemark_tracker_new(&o, &tracker) == TIDEMARK_STATUS_OK);
  for (int w = 0; w < WRITERS; w++) REQUIRE(tidemark_tracker_register(tracker, &ids[w]) == TIDEMARK_STATUS_OK);

  pthread_t c, f0, f1, s;
  int zero = 0, one = 1;
  REQUIRE(pthread_create(&c, NULL, committer, NULL) == 0);
  REQUIRE(pthread_create(&f0, NULL, flusher, &zero) == 0);
  REQUIRE(pthread_create(&f1, NULL, flusher, &one) == 0);
  REQUIRE(pthread_create(&s, NULL, sweeper, NULL) == 0);
  pthread_join(c, NULL);
  pthread_join(f0, NULL);
  pthread_join(f1, NULL);
  pthread_join(s, NULL);

  uint64_t ack = 0;
  CHECK_OK(tidemark_tracker_ack(tracker, &ack));
  CHECK(ack == COMMITS);
  CHECK(atomic_load(&violations) == 0);
  CHECK(atomic_load(&samples) > 0);
  printf("threads_test: %lu ack samples checked, final ack %llu\n", atomic_load(&samples),
         (unsigned long long)ack);
  tidemark_tracker_free(tracker);
  return check_summary("threads_test");
}
