/* ml_host_post's rate (bench/run.sh, section "embed"): THREADS threads each post N
 * callbacks to a host serving APPDIR as fast as they can; the time runs from the first
 * post until the loop has run the last callback. Prints one line:
 *   post THREADS N SENT RAN SECONDS
 * Usage: post_bench APPDIR THREADS N */
#include "moonlet.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static ml_host_t *host;
static long ran;             /* the loop's only */
static long expected;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int finished;

static void count_cb(void *arg) {
  (void)arg;
  if (++ran == expected) {
    pthread_mutex_lock(&lock);
    finished = 1;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
  }
}

static long per_thread;

static void *poster(void *arg) {
  long *sent = arg;
  for (long i = 0; i < per_thread; i++)
    if (ml_host_post(host, count_cb, NULL) == 0) ++*sent;
  return NULL;
}

static void *serve(void *h) {
  ml_host_run(h);
  return NULL;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: post_bench APPDIR THREADS N\n");
    return 2;
  }
  int nthreads = atoi(argv[2]);
  per_thread = atol(argv[3]);
  if (nthreads < 1 || nthreads > 64 || per_thread < 1) return 2;
  expected = nthreads * per_thread;
  ml_config_t cfg;
  ml_config_defaults(&cfg);
  cfg.port = 0;
  cfg.log_level = 2;
  host = ml_host_new(&cfg);
  char err[512];
  if (ml_host_load(host, argv[1], err, sizeof err) || ml_host_listen(host, err, sizeof err)) {
    fprintf(stderr, "post_bench: %s\n", err);
    return 2;
  }
  pthread_t loop, th[64];
  long sent[64] = {0};
  pthread_create(&loop, NULL, serve, host);
  double t0 = now();
  for (int i = 0; i < nthreads; i++) pthread_create(&th[i], NULL, poster, &sent[i]);
  long total = 0;
  for (int i = 0; i < nthreads; i++) {
    pthread_join(th[i], NULL);
    total += sent[i];
  }
  pthread_mutex_lock(&lock);
  while (!finished && total == expected) pthread_cond_wait(&cond, &lock);
  pthread_mutex_unlock(&lock);
  double t = now() - t0;
  ml_host_stop(host);
  pthread_join(loop, NULL);
  printf("post %d %ld %ld %ld %.6f\n", nthreads, per_thread, total, ran, t);
  ml_host_free(host);
  return 0;
}
