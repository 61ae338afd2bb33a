/* moonlet.sleep: the sleeping tasks of a scheduler share one timer (see sched.h).
 *
 * A server that holds 10,000 requests in moonlet.sleep would hold 10,000 libuv timers of
 * 152 bytes each; instead the scheduler keeps its sleepers in a binary heap of (deadline,
 * order of the calls), 24 bytes each, and one timer due at the earliest deadline. Deadlines
 * are on the loop's clock, as a libuv timer's are. Sleepers due at the same time wake in
 * the order they slept; a sleep that starts while the due ones are being woken (a
 * sleep(0) among them) waits for the next turn of the loop. */
#include "sched.h"
#include "core.h"
#include "mem.h"
#include <lauxlib.h>
#include <stdlib.h>

typedef struct ml_sleeper_s {
  uint64_t due;              /* loop time (ms) */
  uint64_t seq;              /* order of the calls: ties wake first come, first served */
  ml_task_t *task;
} ml_sleeper_t;

static int before(const ml_sleeper_t *a, const ml_sleeper_t *b) {
  return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

/* Puts e at slot i of the heap (the task learns where it is). */
static void place(ml_sched_t *s, int i, ml_sleeper_t e) {
  s->sleepers[i] = e;
  e.task->sleep_slot = i + 1;
}

static void sift_up(ml_sched_t *s, int i) {
  ml_sleeper_t e = s->sleepers[i];
  while (i > 0) {
    int p = (i - 1) / 2;
    if (!before(&e, &s->sleepers[p])) break;
    place(s, i, s->sleepers[p]);
    i = p;
  }
  place(s, i, e);
}

static void sift_down(ml_sched_t *s, int i) {
  ml_sleeper_t e = s->sleepers[i];
  int n = s->nsleepers;
  for (;;) {
    int c = 2 * i + 1;
    if (c >= n) break;
    if (c + 1 < n && before(&s->sleepers[c + 1], &s->sleepers[c])) c++;
    if (!before(&s->sleepers[c], &e)) break;
    place(s, i, s->sleepers[c]);
    i = c;
  }
  place(s, i, e);
}

/* Takes the sleeper at slot i out of the heap. */
static void take(ml_sched_t *s, int i) {
  s->sleepers[i].task->sleep_slot = 0;
  int last = --s->nsleepers;
  if (i == last) return;
  place(s, i, s->sleepers[last]);
  if (i > 0 && before(&s->sleepers[i], &s->sleepers[(i - 1) / 2])) sift_up(s, i);
  else sift_down(s, i);
}

static void fire_cb(uv_timer_t *h);

/* The timer, due at the earliest deadline; stopped when nobody sleeps (an armed timer
 * would keep the loop alive). */
static void arm(ml_sched_t *s) {
  if (s->sleep_firing) return;   /* fire_cb arms it when it is done */
  if (!s->nsleepers) {
    uv_timer_stop(&s->sleep_timer);
    return;
  }
  uint64_t now = uv_now(s->loop), due = s->sleepers[0].due;
  uv_timer_start(&s->sleep_timer, fire_cb, due > now ? due - now : 0, 0);
}

/* Wakes the sleepers that are due and that slept before this call. Each wake may resume
 * a coroutine that sleeps again or cancels other sleepers: the heap is read afresh every
 * time. */
static void fire_cb(uv_timer_t *h) {
  ml_sched_t *s = h->data;
  uint64_t now = uv_now(s->loop), limit = s->sleep_seq;
  s->sleep_firing = 1;
  while (s->nsleepers && s->sleepers[0].due <= now && s->sleepers[0].seq < limit) {
    ml_task_t *t = s->sleepers[0].task;
    take(s, 0);
    ml_task_wake(t, 0);
  }
  s->sleep_firing = 0;
  arm(s);
}

static void sleep_cancel(ml_task_t *t) {
  ml_sched_t *s = t->sched;
  if (!t->sleep_slot) return;
  int top = t->sleep_slot == 1;
  take(s, t->sleep_slot - 1);
  if (top) arm(s);
}

/* sleep(seconds) */
static int l_sleep(lua_State *L) {
  uint64_t ms = ml_sched_check_ms(L, 1);
  ml_task_t *t = ml_task_current(L);
  ml_sched_t *s = t->sched;
  if (s->nsleepers == s->sleepers_cap) {
    s->sleepers_cap = s->sleepers_cap ? s->sleepers_cap * 2 : 16;
    s->sleepers = ml_xrealloc(s->sleepers, sizeof *s->sleepers * (size_t)s->sleepers_cap);
  }
  int i = s->nsleepers++;
  s->sleepers[i] = (ml_sleeper_t){uv_now(s->loop) + ms, s->sleep_seq++, t};
  sift_up(s, i);
  if (t->sleep_slot == 1) arm(s);   /* the earliest now */
  return ml_task_wait(L, t, sleep_cancel, NULL);
}

void ml_sleep_init(ml_sched_t *s) {
  uv_timer_init(s->loop, &s->sleep_timer);
  s->sleep_timer.data = s;
}

void ml_sleep_close(ml_sched_t *s) {
  uv_close((uv_handle_t *)&s->sleep_timer, NULL);   /* before the root timer's: see sched.c */
  free(s->sleepers);
  s->sleepers = NULL;
  s->nsleepers = s->sleepers_cap = 0;
}

void ml_sleep_open(lua_State *L) {
  lua_pushcfunction(L, l_sleep);
  lua_setfield(L, -2, "sleep");
}
