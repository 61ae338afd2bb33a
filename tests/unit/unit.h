/* A minimal C unit-test harness: TEST(name) { ... CHECK(cond); CHECK_EQ_INT(a, b); }
 * and RUN(name) in main; UNIT_DONE() prints "N passed, N failed" and returns the status. */
#ifndef ML_UNIT_H
#define ML_UNIT_H
#include <stdio.h>
#include <string.h>

static int unit_passed, unit_failed, unit_cur_failed;

#define TEST(name) static void name(void)
#define CHECK(cond)                                                                       \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      printf("  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);                  \
      unit_cur_failed = 1;                                                               \
    }                                                                                    \
  } while (0)
#define CHECK_EQ_INT(a, b)                                                                \
  do {                                                                                   \
    long long a_ = (long long)(a), b_ = (long long)(b);                                  \
    if (a_ != b_) {                                                                      \
      printf("  %s:%d: %s == %lld, expected %lld\n", __FILE__, __LINE__, #a, a_, b_);    \
      unit_cur_failed = 1;                                                               \
    }                                                                                    \
  } while (0)
#define CHECK_EQ_STR(a, b)                                                                \
  do {                                                                                   \
    const char *a_ = (a), *b_ = (b);                                                     \
    if (!a_ || strcmp(a_, b_) != 0) {                                                    \
      printf("  %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, #a,         \
             a_ ? a_ : "(null)", b_);                                                    \
      unit_cur_failed = 1;                                                               \
    }                                                                                    \
  } while (0)
#define RUN(name)                                                                         \
  do {                                                                                   \
    unit_cur_failed = 0;                                                                 \
    name();                                                                              \
    if (unit_cur_failed) { unit_failed++; printf("FAIL - %s\n", #name); }                \
    else { unit_passed++; printf("ok - %s\n", #name); }                                  \
  } while (0)
#define UNIT_DONE()                                                                       \
  (printf("%d passed, %d failed\n", unit_passed, unit_failed), unit_failed ? 1 : 0)
#endif
