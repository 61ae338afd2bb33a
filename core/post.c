/* The loop's queue of calls from other threads (see post.h). */
#include "post.h"
#include "mem.h"
#include <assert.h>
#include <pthread.h>
#include <stdlib.h>

typedef struct item_s {
  struct item_s *next;
  ml_post_fn fn;
  void *arg;
} item_t;

struct ml_post_s {
  uv_async_t async;          /* the queue went from empty to not empty */
  pthread_mutex_t lock;
  item_t *head, *tail;       /* oldest first */
  int closed;
  int handle_closed, free_asked;   /* on the loop: both -> the memory goes */
};

/* Runs a list taken from the queue, oldest first, freeing each item. */
static void run_list(item_t *it) {
  while (it) {
    item_t *next = it->next;
    it->fn(it->arg);
    free(it);
    it = next;
  }
}

/* Takes the whole queue (the loop's side). */
static item_t *take_all(ml_post_t *q) {
  pthread_mutex_lock(&q->lock);
  item_t *list = q->head;
  q->head = q->tail = NULL;
  pthread_mutex_unlock(&q->lock);
  return list;
}

static void async_cb(uv_async_t *a) {
  run_list(take_all(a->data));
}

ml_post_t *ml_post_new(uv_loop_t *loop) {
  ml_post_t *q = ml_xcalloc(1, sizeof *q);
  pthread_mutex_init(&q->lock, NULL);
  uv_async_init(loop, &q->async, async_cb);
  q->async.data = q;
  uv_unref((uv_handle_t *)&q->async);   /* the queue alone keeps no loop running */
  return q;
}

/* The wake-up is sent under the lock: ml_post_close, which takes it to set `closed`, then
 * knows no thread is still inside uv_async_send on a handle it is about to close. */
int ml_post_push(ml_post_t *q, ml_post_fn fn, void *arg) {
  item_t *it = ml_xmalloc(sizeof *it);
  it->next = NULL;
  it->fn = fn;
  it->arg = arg;
  pthread_mutex_lock(&q->lock);
  if (q->closed) {
    pthread_mutex_unlock(&q->lock);
    free(it);
    return -1;
  }
  if (q->tail) {
    q->tail->next = it;
  } else {
    q->head = it;
    uv_async_send(&q->async);
  }
  q->tail = it;
  pthread_mutex_unlock(&q->lock);
  return 0;
}

static void closed_cb(uv_handle_t *h);

void ml_post_close(ml_post_t *q) {
  pthread_mutex_lock(&q->lock);
  int was = q->closed;
  q->closed = 1;
  pthread_mutex_unlock(&q->lock);
  if (was) return;
  run_list(take_all(q));
  uv_close((uv_handle_t *)&q->async, closed_cb);
}

static void release(ml_post_t *q) {
  assert(q->closed && !q->head);
  pthread_mutex_destroy(&q->lock);
  free(q);
}

/* The memory goes when both happened: the handle closed, and ml_post_free was called
 * (on a borrowed loop the host's memory may go before the loop ran this close). */
static void closed_cb(uv_handle_t *h) {
  ml_post_t *q = h->data;
  q->handle_closed = 1;
  if (q->free_asked) release(q);
}

void ml_post_free(ml_post_t *q) {
  if (!q) return;
  q->free_asked = 1;
  if (q->handle_closed) release(q);
}
