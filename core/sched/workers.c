/* Worker threads (see workers.h).
 * Locking: p->lock guards the queue, the done list, the idle stack, the counters and each
 * job's state and cancelled flag. A job is held by the queue, then by its thread, then by
 * the done list, then handed back through its done callback. */
#include "workers.h"
#include "mem.h"
#include "app.h"
#include "log.h"
#include "metrics.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { JOB_QUEUED, JOB_RUNNING, JOB_DONE };

struct ml_worker_s {
  ml_workers_t *pool;
  pthread_t thread;
  uv_loop_t loop;            /* the thread's own: its primitives block on it */
  ml_app_t *app;             /* the thread's app state; NULL if it could not load */
  char *load_error;          /* why it could not */
  int generation;            /* the code generation its app state loaded (ml_workers_reload) */
  uv_async_t wake;           /* on its own loop: a job is waiting for this idle thread */
  int idle;                  /* on the idle stack */
  int woken;                 /* sent for a job: counts in pool->waking until it looks */
};

struct ml_workers_s {
  uv_loop_t *loop;
  uv_async_t async;          /* the done list has jobs */
  pthread_mutex_t lock;
  pthread_cond_t exit_cond;
  ml_list_t queue;           /* of ml_work_t, oldest first */
  ml_list_t done;            /* finished, oldest first */
  int queued, max_queue;
  int outstanding;           /* submitted, not handed back yet (loop thread only) */
  int detached;              /* jobs in flight no longer keep the loop alive */
  int size, nthreads, stopping, exited;
  ml_worker_t **idle;        /* idle threads, most recently idle last (woken first) */
  int nidle;
  int waking;                /* idle threads woken for the queue that have not looked at
                              * it yet: while one is on its way, a submission wakes no
                              * other (it takes the job, then wakes the next if more are
                              * queued: a cascade, one wake-up per thread needed rather
                              * than one per job) */
  int starting;              /* threads started that have not looked at the queue yet */
  int generation;            /* bumped by ml_workers_reload */
  ml_worker_t *workers;
  char *appdir;
  const ml_preload_t *preload;   /* the embedder's modules (the host's), for every state */
  const char *name;          /* "pool" or "executor" (ML_WORKERS_*), for logs */
  int gauge_busy, gauge_queued;   /* its metrics gauges */
};

/* --- the worker thread side ---------------------------------------------------------- */

/* Builds the thread's app state on its loop; on failure w->load_error says why. */
static void worker_load(ml_worker_t *w, const char *what) {
  char err[1024];
  w->app = ml_app_new(&w->loop, w->pool->appdir, ML_APP_POOL, w->pool->preload, err,
                      sizeof err);
  if (w->app) return;
  w->load_error = ml_xstrdup(err);
  ml_log(ML_LOG_ERROR, "%s: %s%s", w->pool->name, what, err);
}

/* Frees the thread's app state; its loop (and wake handle) stay for the next one. */
static void worker_unload(ml_worker_t *w) {
  if (w->app) {
    ml_app_stop(w->app);
    uv_unref((uv_handle_t *)&w->wake);
    uv_run(&w->loop, UV_RUN_DEFAULT);   /* the scheduler's handles close */
    uv_ref((uv_handle_t *)&w->wake);
    ml_app_free(w->app);
    w->app = NULL;
  }
  free(w->load_error);
  w->load_error = NULL;
}

ml_app_t *ml_worker_app(ml_worker_t *w, const char **load_error) {
  *load_error = w->load_error;
  return w->app;
}

static void wake_cb(uv_async_t *a) {
  (void)a;   /* waking uv_run is all it is for */
}

static void idle_remove(ml_workers_t *p, ml_worker_t *w) {
  for (int i = 0; i < p->nidle; i++)
    if (p->idle[i] == w) {
      p->idle[i] = p->idle[--p->nidle];
      break;
    }
  w->idle = 0;
}

/* Takes the oldest queued job (lock held): NULL when there is none. */
static ml_work_t *queue_take(ml_workers_t *p) {
  ml_work_t *j = ml_list_first(&p->queue, ml_work_t, link);
  if (!j) return NULL;
  ml_list_remove(&j->link);
  p->queued--;
  ml_metrics_gauge(p->gauge_queued, -1);
  j->state = JOB_RUNNING;
  return j;
}

static void thread_start(ml_workers_t *p);

/* Whether the thread's loop has anything to run besides waiting for jobs. */
static int has_background(ml_worker_t *w) {
  uv_unref((uv_handle_t *)&w->wake);
  int alive = uv_loop_alive(&w->loop);
  uv_ref((uv_handle_t *)&w->wake);
  return alive;
}

/* Sends one more thread to the queue (lock held), unless one is on its way already: the
 * one that went idle last (its caches are warm); else, while there are fewer than size, a
 * new one for each queued job that no thread starting already will take (a thread loads
 * the app first, for milliseconds: jobs that each hold a thread, 40 concurrent 1 s sleeps,
 * must not wait for one load after another). */
static void wake_one(ml_workers_t *p) {
  if (p->nidle > 0) {
    if (p->waking > 0) return;
    ml_worker_t *w = p->idle[--p->nidle];
    w->idle = 0;
    w->woken = 1;
    p->waking++;
    uv_async_send(&w->wake);
  } else if (p->nthreads < p->size && p->starting < p->queued) {
    thread_start(p);
  }
}

/* A worker thread. Between jobs it waits on its own loop, not on a condition variable, so
 * what its state started in the background (moonlet.spawn at app load, a spawned task's
 * timers and sockets) keeps running while the thread is idle; a submitted job wakes it
 * through w->wake (one thread at a time: wake_one). Jobs run outside any libuv callback,
 * so their blocking waits may run the loop themselves. */
static void *worker_main(void *arg) {
  ml_worker_t *w = arg;
  ml_workers_t *p = w->pool;
  uv_loop_init(&w->loop);
  uv_async_init(&w->loop, &w->wake, wake_cb);
  worker_load(w, "");
  pthread_mutex_lock(&p->lock);
  p->starting--;
  w->generation = p->generation;
  for (;;) {
    if (w->idle) idle_remove(p, w);
    if (w->woken) {
      w->woken = 0;
      p->waking--;
    }
    ml_work_t *j = queue_take(p);
    if (j && p->queued > 0) wake_one(p);   /* the cascade */
    if (!j) {
      if (p->stopping) break;
      w->idle = 1;
      p->idle[p->nidle++] = w;
      pthread_mutex_unlock(&p->lock);
      uv_run(&w->loop, UV_RUN_ONCE);   /* a job (w->wake) or background work */
      pthread_mutex_lock(&p->lock);
      continue;
    }
    int generation = p->generation;
    pthread_mutex_unlock(&p->lock);
    if (generation != w->generation) {   /* the code changed (--reload): load it anew */
      worker_unload(w);
      worker_load(w, "reload: ");
      w->generation = generation;
    }
    ml_metrics_gauge(p->gauge_busy, 1);
    j->work(w, j);
    ml_metrics_gauge(p->gauge_busy, -1);
    pthread_mutex_lock(&p->lock);
    j->state = JOB_DONE;
    /* done_cb takes the whole list: only the job that finds it empty needs to signal */
    int first = ml_list_empty(&p->done);
    ml_list_push(&p->done, &j->link);
    if (first) uv_async_send(&p->async);
    /* what the state runs in the background (its timers and sockets, the work a request
     * left for after its response) gets a turn between jobs: a thread that never finds
     * the queue empty, as the cascade makes likelier, would starve it */
    if (has_background(w)) {
      pthread_mutex_unlock(&p->lock);
      uv_run(&w->loop, UV_RUN_NOWAIT);
      pthread_mutex_lock(&p->lock);
    }
  }
  pthread_mutex_unlock(&p->lock);
  worker_unload(w);
  uv_close((uv_handle_t *)&w->wake, NULL);
  uv_run(&w->loop, UV_RUN_DEFAULT);
  uv_loop_close(&w->loop);
  pthread_mutex_lock(&p->lock);
  p->exited++;
  pthread_cond_broadcast(&p->exit_cond);
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

/* --- the loop side ------------------------------------------------------------------- */

/* Hands j back to its user. */
static void job_done(ml_workers_t *p, ml_work_t *j, int status) {
  if (--p->outstanding == 0) uv_unref((uv_handle_t *)&p->async);
  j->done(j, j->cancelled ? UV_ECANCELED : status);
}

/* The loop's side of the done list: hands the finished jobs back, oldest first. */
static void done_cb(uv_async_t *a) {
  ml_workers_t *p = a->data;
  ml_list_t list;
  pthread_mutex_lock(&p->lock);
  ml_list_take_all(&p->done, &list);
  pthread_mutex_unlock(&p->lock);
  ml_work_t *j;
  while ((j = ml_list_first(&list, ml_work_t, link))) {
    ml_list_remove(&j->link);
    job_done(p, j, 0);
  }
}

ml_workers_t *ml_workers_new(uv_loop_t *loop, const char *appdir, const ml_preload_t *preload,
                             int size, int max_queue, int kind) {
  ml_workers_t *p = ml_xcalloc(1, sizeof *p);
  int executor = kind == ML_WORKERS_EXECUTOR;
  p->name = executor ? "executor" : "pool";
  p->gauge_busy = executor ? ML_G_EXECUTOR_BUSY : ML_G_POOL_BUSY;
  p->gauge_queued = executor ? ML_G_EXECUTOR_QUEUED : ML_G_POOL_QUEUED;
  ml_list_init(&p->queue);
  ml_list_init(&p->done);
  p->loop = loop;
  p->size = size > 0 ? size : 1;
  p->max_queue = max_queue;
  p->appdir = ml_xstrdup(appdir);
  p->preload = preload;
  p->workers = ml_xcalloc((size_t)p->size, sizeof *p->workers);
  p->idle = ml_xcalloc((size_t)p->size, sizeof *p->idle);
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->exit_cond, NULL);
  uv_async_init(loop, &p->async, done_cb);
  p->async.data = p;
  uv_unref((uv_handle_t *)&p->async);
  return p;
}

/* Starts one more thread (lock held). */
static void thread_start(ml_workers_t *p) {
  ml_worker_t *w = &p->workers[p->nthreads];
  w->pool = p;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 1 << 20);
  if (pthread_create(&w->thread, &attr, worker_main, w) == 0) {
    p->nthreads++;
    p->starting++;
  } else ml_log(ML_LOG_WARN, "%s: cannot start a thread (%d running)", p->name, p->nthreads);
  pthread_attr_destroy(&attr);
}

int ml_workers_submit(ml_workers_t *p, ml_work_t *j, ml_work_fn work, ml_work_done_fn done) {
  pthread_mutex_lock(&p->lock);
  /* jobs that neither an idle thread nor one yet to start will take at once */
  int waiting = p->queued - p->nidle - (p->size - p->nthreads);
  if (waiting >= p->max_queue) {
    pthread_mutex_unlock(&p->lock);
    return UV_EBUSY;
  }
  j->work = work;
  j->done = done;
  j->state = JOB_QUEUED;
  j->cancelled = 0;
  ml_list_push(&p->queue, &j->link);
  p->queued++;
  ml_metrics_gauge(p->gauge_queued, 1);
  wake_one(p);
  pthread_mutex_unlock(&p->lock);
  if (p->outstanding++ == 0 && !p->detached) uv_ref((uv_handle_t *)&p->async);
  return 0;
}

void ml_workers_cancel(ml_workers_t *p, ml_work_t *j) {
  pthread_mutex_lock(&p->lock);
  j->cancelled = 1;
  if (j->state != JOB_QUEUED) {   /* running or done: done_cb hands it back */
    pthread_mutex_unlock(&p->lock);
    return;
  }
  ml_list_remove(&j->link);
  p->queued--;
  ml_metrics_gauge(p->gauge_queued, -1);
  pthread_mutex_unlock(&p->lock);
  job_done(p, j, UV_ECANCELED);
}

void ml_workers_detach(ml_workers_t *p) {
  if (!p) return;
  p->detached = 1;
  uv_unref((uv_handle_t *)&p->async);
}

void ml_workers_reload(ml_workers_t *p) {
  pthread_mutex_lock(&p->lock);
  p->generation++;
  pthread_mutex_unlock(&p->lock);
}

static void workers_closed_cb(uv_handle_t *h) {
  ml_workers_t *p = h->data;
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->exit_cond);
  free(p->idle);
  free(p->workers);
  free(p->appdir);
  free(p);
}

/* Hands back every job of a list (the threads have exited). */
static void list_cancel(ml_workers_t *p, ml_list_t *list) {
  ml_work_t *j;
  while ((j = ml_list_first(list, ml_work_t, link))) {
    ml_list_remove(&j->link);
    if (list == &p->queue) ml_metrics_gauge(p->gauge_queued, -1);
    j->cancelled = 1;
    job_done(p, j, UV_ECANCELED);
  }
}

void ml_workers_free(ml_workers_t *p, double wait_s) {
  if (!p) return;
  pthread_mutex_lock(&p->lock);
  p->stopping = 1;
  for (int i = 0; i < p->nidle; i++) uv_async_send(&p->idle[i]->wake);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += (time_t)wait_s + 1;
  while (p->exited < p->nthreads)
    if (pthread_cond_timedwait(&p->exit_cond, &p->lock, &until)) break;
  int all = p->exited == p->nthreads;
  pthread_mutex_unlock(&p->lock);
  if (!all) {   /* a handler that never returns: leave the process to end it */
    ml_log(ML_LOG_WARN, "%s: %d thread(s) still busy at shutdown", p->name,
           p->nthreads - p->exited);
    uv_close((uv_handle_t *)&p->async, NULL);
    return;
  }
  for (int i = 0; i < p->nthreads; i++) pthread_join(p->workers[i].thread, NULL);
  list_cancel(p, &p->queue);
  list_cancel(p, &p->done);
  uv_close((uv_handle_t *)&p->async, workers_closed_cb);
}
