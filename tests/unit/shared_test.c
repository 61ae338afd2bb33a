/* moonlet.shared's region and dictionaries (core/sched/shared_*.c) across processes: exact
 * counts from 4 processes x 4 threads, LRU eviction and safe_set's refusal, TTLs, and a
 * process killed while holding the lock, idle or in the middle of a change. One region for
 * the whole test (a process has one), made as the supervisor makes it; the children are
 * forked, so they map it at the same address, but every access goes by offsets anyway. */
#define _GNU_SOURCE
#include "shared.h"
#include "shared_dict.h"
#include "shared_heap.h"
#include "shared_region.h"
#include "log.h"
#include "unit.h"
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define REGION (256 * 1024)
#define PROCS 4
#define THREADS 4
#define ROUNDS 20000

static char logged[4096];   /* the error and warning lines the repair wrote */

static void log_cb(int level, const char *line, void *user) {
  (void)user;
  if (level >= ML_LOG_WARN && strlen(logged) + strlen(line) + 2 < sizeof logged) {
    strcat(logged, line);
    strcat(logged, "\n");
  }
}

static int dict(const char *name) {
  char err[200];
  int d = ml_sdict_open(name, strlen(name), err, sizeof err);
  if (d < 0) printf("  open %s: %s\n", name, err);
  return d;
}

static int set_str(int d, const char *k, const char *v, size_t len, int flags, int *forcible) {
  ml_sval_t sv = {.type = ML_SV_STR, .str = v, .len = len};
  *forcible = 0;
  return ml_sdict_set(d, k, strlen(k), &sv, 0, flags, forcible);
}

static int set_num(int d, const char *k, double n, double ttl) {
  ml_sval_t sv = {.type = ML_SV_NUM, .num = n};
  int forcible;
  return ml_sdict_set(d, k, strlen(k), &sv, ttl, 0, &forcible);
}

static int has(int d, const char *k) {
  ml_sval_copy_t v;
  if (ml_sdict_get(d, k, strlen(k), &v) != ML_SD_OK) return 0;
  ml_sval_copy_free(&v);
  return 1;
}

static double get_num(int d, const char *k) {
  ml_sval_copy_t v;
  if (ml_sdict_get(d, k, strlen(k), &v) != ML_SD_OK || v.type != ML_SV_NUM) return -1;
  return v.num;
}

static void heap_ok(void) {
  char err[200];
  ml_shr_lock();
  int rc = ml_shheap_check(ML_SHR, err, sizeof err);
  ml_shr_unlock();
  if (rc) printf("  heap: %s\n", err);
  CHECK_EQ_INT(rc, 0);
}

TEST(attach_refuses_what_is_not_a_region) {
  char err[200];
  CHECK_EQ_INT(ml_shared_region_attach(0, err, sizeof err), -1);   /* stdin: no region */
  int fd = memfd_create("not-a-region", MFD_CLOEXEC);
  CHECK(fd >= 0 && ftruncate(fd, 65536) == 0);
  CHECK_EQ_INT(ml_shared_region_attach(fd, err, sizeof err), -1);
  CHECK(strstr(err, "region") != NULL);
  close(fd);
  CHECK_EQ_INT(ml_shared_region_create(REGION, err, sizeof err), -1);   /* one per process */
  CHECK(strstr(err, "already") != NULL);
}

struct worker_arg {
  int d;
  int churn;
};

/* incr on two counters (one created by init, raced by everyone), plus writes of changing
 * sizes into a small dictionary that keeps evicting: the allocator under contention. */
static void *incr_thread(void *p) {
  struct worker_arg *a = p;
  double zero = 0, out;
  char key[16], val[700];
  memset(val, 'v', sizeof val);
  for (int i = 0; i < ROUNDS; i++) {
    int forcible;
    ml_sdict_incr(a->d, "a", 1, 1, &zero, 0, &out, &forcible);
    ml_sdict_incr(a->d, "b", 1, 2, &zero, 0, &out, &forcible);
    if (i % 8 == 0) {
      snprintf(key, sizeof key, "k%d", i % 97);
      set_str(a->churn, key, val, (size_t)(i * 7) % sizeof val, 0, &forcible);
    }
  }
  return NULL;
}

static void incr_process(int d, int churn) {
  pthread_t t[THREADS];
  struct worker_arg a = {d, churn};
  for (int i = 0; i < THREADS; i++) pthread_create(&t[i], NULL, incr_thread, &a);
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
}

TEST(counts_exact_across_processes_and_threads) {
  int d = dict("counts"), churn = dict("churn");
  pid_t pids[PROCS];
  for (int p = 0; p < PROCS; p++) {
    pids[p] = fork();
    if (pids[p] == 0) {
      incr_process(d, churn);
      _exit(0);
    }
  }
  int clean = 0;
  for (int p = 0; p < PROCS; p++) {
    int st;
    if (waitpid(pids[p], &st, 0) == pids[p] && WIFEXITED(st) && WEXITSTATUS(st) == 0) clean++;
  }
  CHECK_EQ_INT(clean, PROCS);
  CHECK_EQ_INT(get_num(d, "a"), PROCS * THREADS * ROUNDS);
  CHECK_EQ_INT(get_num(d, "b"), 2 * PROCS * THREADS * ROUNDS);
  heap_ok();
}

TEST(lru_eviction_and_safe_set) {
  int d = dict("lru");
  static char big[20000];
  memset(big, 'x', sizeof big);
  char key[16];
  int n = 0, forcible = 0;
  /* safe_set fills the region (what other tests left in it counts too) and then refuses */
  for (; n < 100; n++) {
    snprintf(key, sizeof key, "k%d", n);
    if (set_str(d, key, big, sizeof big, ML_SD_SAFE, &forcible) != ML_SD_OK) break;
  }
  CHECK(n >= 3 && n < 100);
  CHECK_EQ_INT(forcible, 0);
  CHECK_EQ_INT(set_str(d, "more", big, sizeof big, ML_SD_SAFE | ML_SD_ADD, &forcible),
               ML_SD_NO_MEMORY);
  for (int i = 0; i < n; i++) {   /* nothing was evicted for it */
    snprintf(key, sizeof key, "k%d", i);
    CHECK(has(d, key));   /* reads k0 .. k(n-1) in order: k0 is now the least recent */
  }
  CHECK(has(d, "k0"));    /* k0 the most recent again: k1 is the least recent now */
  CHECK_EQ_INT(set_str(d, "new", big, sizeof big, 0, &forcible), ML_SD_OK);
  CHECK_EQ_INT(forcible, 1);
  CHECK(!has(d, "k1"));
  CHECK(has(d, "k0"));
  CHECK(has(d, "new"));
  CHECK(has(d, "k2"));
  /* an expired entry goes before any live one */
  snprintf(key, sizeof key, "k%d", n - 1);
  ml_sdict_expire(d, key, strlen(key), 0.001);
  usleep(5000);
  CHECK_EQ_INT(set_str(d, "newer", big, sizeof big, 0, &forcible), ML_SD_OK);
  CHECK_EQ_INT(forcible, 0);
  CHECK(has(d, "k2"));
  /* an entry larger than the whole region: an error of its own, nothing evicted */
  static char huge[REGION];
  CHECK_EQ_INT(set_str(d, "huge", huge, sizeof huge, 0, &forcible), ML_SD_TOO_LARGE);
  CHECK(has(d, "k2"));
  heap_ok();
  ml_sdict_flush_all(d);
  CHECK(!has(d, "k0"));
  heap_ok();
}

TEST(ttl_expiry) {
  int d = dict("ttl");
  double left = -1;
  CHECK_EQ_INT(set_num(d, "short", 1, 0.05), ML_SD_OK);
  CHECK_EQ_INT(set_num(d, "forever", 2, 0), ML_SD_OK);
  CHECK_EQ_INT(ml_sdict_ttl(d, "short", 5, &left), ML_SD_OK);
  CHECK(left > 0 && left <= 0.05);
  CHECK_EQ_INT(ml_sdict_ttl(d, "forever", 7, &left), ML_SD_OK);
  CHECK(left == 0);
  CHECK_EQ_INT(ml_sdict_expire(d, "forever", 7, 0.05), ML_SD_OK);
  usleep(80000);
  CHECK(!has(d, "short"));
  CHECK(!has(d, "forever"));
  CHECK_EQ_INT(ml_sdict_ttl(d, "short", 5, &left), ML_SD_NOT_FOUND);
  CHECK_EQ_INT(ml_sdict_expire(d, "nope", 4, 1), ML_SD_NOT_FOUND);
}

TEST(expired_entries_of_any_dictionary_make_room) {
  int cache = dict("cache"), sessions = dict("sessions");
  static char big[20000];
  memset(big, 'c', sizeof big);
  char key[16];
  int n = 0, forcible;
  for (; n < 100; n++) {   /* "cache" fills the region with entries that expire at once */
    snprintf(key, sizeof key, "c%d", n);
    ml_sval_t sv = {.type = ML_SV_STR, .str = big, .len = sizeof big};
    if (ml_sdict_set(cache, key, strlen(key), &sv, 0.01, ML_SD_SAFE, &forcible) != ML_SD_OK) break;
  }
  CHECK(n >= 3 && n < 100);
  usleep(20000);
  int stored = 0;   /* a write that must not evict still gets the dead entries' room */
  for (int i = 0; i < n; i++) {
    snprintf(key, sizeof key, "s%d", i);
    if (set_str(sessions, key, big, sizeof big, ML_SD_SAFE, &forcible) == ML_SD_OK) stored++;
    CHECK_EQ_INT(forcible, 0);
  }
  CHECK_EQ_INT(stored, n);
  heap_ok();
  ml_sdict_flush_all(sessions);
  ml_sdict_flush_all(cache);
}

/* A child takes the lock (mode: see ml_shared_debug_lock), says so through a pipe and is
 * killed there with SIGKILL. Returns 1 if it all went that way. */
static int child_dies_holding_lock(const char *name, int mode) {
  int p[2];
  if (pipe(p) != 0) return 0;
  pid_t pid = fork();
  if (pid == 0) {
    char err[200];
    if (ml_shared_debug_lock(name, mode, err, sizeof err) != 0) _exit(1);
    if (write(p[1], "L", 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  char c = 0;
  int ok = read(p[0], &c, 1) == 1 && c == 'L';
  kill(pid, SIGKILL);
  int st;
  waitpid(pid, &st, 0);
  close(p[0]);
  close(p[1]);
  return ok && WIFSIGNALED(st);
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

TEST(killed_holding_the_lock) {
  int d = dict("keep");
  CHECK_EQ_INT(set_num(d, "x", 7, 0), ML_SD_OK);
  logged[0] = 0;
  CHECK(child_dies_holding_lock("keep", 0));
  alarm(10);   /* a wedged lock fails the test instead of hanging it */
  double t0 = now();
  CHECK_EQ_INT(get_num(d, "x"), 7);   /* it changed nothing: nothing is lost */
  CHECK_EQ_INT(set_num(d, "y", 8, 0), ML_SD_OK);
  CHECK(now() - t0 < 1);
  alarm(0);
  CHECK(strstr(logged, "died holding the lock") != NULL);
}

TEST(killed_in_the_middle_of_a_change) {
  int victim = dict("victim"), other = dict("other");
  ml_sdict_flush_all(dict("lru"));
  size_t before = ml_sdict_free_space();
  char key[16];
  for (int i = 0; i < 50; i++) {
    snprintf(key, sizeof key, "v%d", i);
    set_num(victim, key, i, 0);
  }
  set_num(other, "o", 1, 0);
  size_t other_cost = before - ml_sdict_free_space();
  logged[0] = 0;
  CHECK(child_dies_holding_lock("victim", 1));
  alarm(10);
  CHECK(!has(victim, "v3"));          /* emptied ... */
  CHECK_EQ_INT(get_num(other, "o"), 1);   /* ... alone */
  alarm(0);
  CHECK(strstr(logged, "dictionary \"victim\": emptied it (50 entries lost)") != NULL);
  heap_ok();
  /* its blocks came back: only "other" (and its table) is left of what was added */
  size_t victim_left = before - ml_sdict_free_space();
  CHECK(victim_left < other_cost);
  CHECK_EQ_INT(set_num(victim, "again", 3, 0), ML_SD_OK);   /* and usable */
  CHECK_EQ_INT(get_num(victim, "again"), 3);

  logged[0] = 0;
  CHECK(child_dies_holding_lock("victim", 2));   /* inside the allocator: all emptied */
  CHECK(!has(other, "o"));
  CHECK(!has(victim, "again"));
  CHECK(strstr(logged, "died while allocating shared memory: emptied all") != NULL);
  heap_ok();
  CHECK_EQ_INT(set_num(other, "o", 2, 0), ML_SD_OK);
  CHECK_EQ_INT(get_num(other, "o"), 2);
}

int main(void) {
  char err[200];
  ml_log_configure(ML_LOG_WARN, log_cb, NULL);
  int fd = ml_shared_region_create(REGION, err, sizeof err);
  if (fd < 0) {
    printf("region: %s\n0 passed, 1 failed\n", err);
    return 1;
  }
  RUN(attach_refuses_what_is_not_a_region);
  RUN(counts_exact_across_processes_and_threads);
  RUN(lru_eviction_and_safe_set);
  RUN(ttl_expiry);
  RUN(expired_entries_of_any_dictionary_make_room);
  RUN(killed_holding_the_lock);
  RUN(killed_in_the_middle_of_a_change);
  return UNIT_DONE();
}
