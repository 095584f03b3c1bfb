/* The crossing measured from C: per-item cost of tidemark_tracker_flushed one call at a time
 * against tidemark_tracker_flushed_many with n = 1, 16, 256; try_push against push_many; and
 * tidemark_tracker_ack (one atomic load behind it: the bare crossing). Same workloads as
 * benches/benches/abi.rs, which measures the direct Rust calls next to the ABI in one run.
 * Run: scripts/abi-bench.sh. */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

enum { W = 256, ROUNDS = 2000 };

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static tidemark_tracker *t;
static tidemark_writer_id ids[W];
static uint64_t next_tx = 1;

static void deliver(tidemark_offset *owed) {
  for (int i = 0; i < W; i++) {
    owed[i].tx = next_tx++;
    owed[i].op = 0;
    REQUIRE(tidemark_tracker_commit(t, owed[i], &ids[i], 1, 0) == TIDEMARK_STATUS_OK);
  }
}

/* ns per flush report, timing only the reports; n == 0 means one call per report. */
static double bench_flushed(size_t n) {
  tidemark_offset owed[W];
  tidemark_status st[W];
  double total = 0;
  for (int r = 0; r < ROUNDS; r++) {
    deliver(owed);
    double start = now_ns();
    if (n == 0) {
      for (int i = 0; i < W; i++)
        if (tidemark_tracker_flushed(t, ids[i], owed[i], 1) != TIDEMARK_STATUS_OK) exit(3);
    } else {
      for (size_t i = 0; i < W; i += n) {
        size_t failed = 0;
        if (tidemark_tracker_flushed_many(t, &ids[i], &owed[i], n, 1, st, &failed) != TIDEMARK_STATUS_OK ||
            failed != 0)
          exit(3);
      }
    }
    total += now_ns() - start;
  }
  return total / ((double)ROUNDS * W);
}

static void drain(const tidemark_batch_buffer *b) {
  tidemark_batch *batch;
  uint64_t wait;
  while (tidemark_batch_buffer_poll_batch(b, &batch, &wait) == TIDEMARK_STATUS_OK)
    if (tidemark_batch_buffer_ack(b, batch) != TIDEMARK_STATUS_OK) exit(3);
}

/* ns per message pushed (16 bytes each), timing only the pushes; n == 0: try_push. */
static double bench_push(const tidemark_batch_buffer *b, size_t n) {
  static const uint8_t payload[16] = {7};
  tidemark_message ms[W];
  for (int i = 0; i < W; i++) {
    ms[i].data = payload;
    ms[i].len = sizeof payload;
    ms[i].offset.tx = 1;
    ms[i].offset.op = 0;
    ms[i].has_offset = true;
  }
  double total = 0;
  for (int r = 0; r < ROUNDS; r++) {
    double start = now_ns();
    if (n == 0) {
      for (int i = 0; i < W; i++)
        if (tidemark_batch_buffer_try_push(b, &ms[i]) != TIDEMARK_STATUS_OK) exit(3);
    } else {
      for (size_t i = 0; i < W; i += n) {
        size_t accepted;
        tidemark_status refusal;
        if (tidemark_batch_buffer_push_many(b, &ms[i], n, &accepted, &refusal) != TIDEMARK_STATUS_OK ||
            accepted != n)
          exit(3);
      }
    }
    total += now_ns() - start;
    drain(b);
  }
  return total / ((double)ROUNDS * W);
}

int main(void) {
  tidemark_tracker_options o;
  REQUIRE(tidemark_tracker_options_default(&o) == TIDEMARK_STATUS_OK);
  REQUIRE(tidemark_tracker_new(&o, &t) == TIDEMARK_STATUS_OK);
  for (int i = 0; i < W; i++) REQUIRE(tidemark_tracker_register(t, &ids[i]) == TIDEMARK_STATUS_OK);

  bench_flushed(0); /* warm-up */
  printf("flushed, one call each     %6.1f ns/report\n", bench_flushed(0));
  printf("flushed_many n=1           %6.1f ns/report\n", bench_flushed(1));
  printf("flushed_many n=16          %6.1f ns/report\n", bench_flushed(16));
  printf("flushed_many n=256         %6.1f ns/report\n", bench_flushed(256));

  uint64_t ack = 0;
  const int calls = 10 * 1000 * 1000;
  double start = now_ns();
  for (int i = 0; i < calls; i++)
    if (tidemark_tracker_ack(t, &ack) != TIDEMARK_STATUS_OK) exit(3);
  printf("ack                        %6.1f ns/call\n", (now_ns() - start) / calls);

  tidemark_batch_config c;
  tidemark_batch_buffer *b;
  REQUIRE(tidemark_batch_config_default(&c) == TIDEMARK_STATUS_OK);
  c.max_messages = W;
  c.linger_us = 3600ull * 1000 * 1000;
  c.capacity_messages = 4 * W;
  REQUIRE(tidemark_batch_buffer_new(&c, &b) == TIDEMARK_STATUS_OK);
  bench_push(b, 0); /* warm-up */
  printf("try_push                   %6.1f ns/message\n", bench_push(b, 0));
  printf("push_many n=16             %6.1f ns/message\n", bench_push(b, 16));
  printf("push_many n=256            %6.1f ns/message\n", bench_push(b, 256));

  tidemark_stop_report *r;
  REQUIRE(tidemark_batch_buffer_stop(b, 0, &r) == TIDEMARK_STATUS_OK);
  tidemark_stop_report_free(r);
  tidemark_batch_buffer_free(b);
  tidemark_tracker_free(t);
  return 0;
}
