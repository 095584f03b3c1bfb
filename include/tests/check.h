/* Tiny assertion helpers shared by the C tests (not part of the library). */
#ifndef TIDEMARK_TEST_CHECK_H
#define TIDEMARK_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#include "tidemark.h"

static int check_failures;
static int check_passes;

/* Fails the test (keeps going, so one run reports every failure) when `cond` is false. */
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (cond) {                                                                \
      check_passes++;                                                          \
    } else {                                                                   \
      check_failures++;                                                        \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                          \
  } while (0)

/* Checks that `call` returns `expected` (a TIDEMARK_STATUS_* constant). */
#define CHECK_STATUS(call, expected)                                             \
  do {                                                                           \
    tidemark_status got_ = (call);                                               \
    if (got_ == (tidemark_status)(expected)) {                                   \
      check_passes++;                                                            \
    } else {                                                                     \
      check_failures++;                                                          \
      fprintf(stderr, "%s:%d: %s returned %u (%s), expected %s\n", __FILE__,    \
              __LINE__, #call, (unsigned)got_, tidemark_status_message(got_),   \
              #expected);                                                        \
    }                                                                            \
  } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, TIDEMARK_STATUS_OK)

/* Stops the test at once when `cond` is false (for preconditions later steps rely on). */
#define REQUIRE(cond)                                                         \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(2);                                                                \
    }                                                                         \
  } while (0)

/* Prints the summary line and returns the exit status for main. */
static inline int check_summary(const char *name) {
  printf("%s: %d passed, %d failed\n", name, check_passes, check_failures);
  return check_failures == 0 ? 0 : 1;
}

#endif
