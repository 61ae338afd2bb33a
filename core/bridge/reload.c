/* The --reload watcher (see reload.h). A change is a different signature: a hash over
 * the path, size and modification time of every .lua file below the app directory.
 *
 * Events: one inotify watch (uv_fs_event_t) per directory, hidden ones skipped. An event
 * that may concern code (a .lua name, or a name that may be a directory: created,
 * removed, renamed) arms a short debounce; when it fires, the directories are walked
 * again (a new one gets its watch, a vanished one loses it) and the signature is taken:
 * if it differs from the loaded code's, on_change runs. Editors that save by writing a
 * temporary file and renaming it over the old one, or by deleting and creating, end in
 * the same place: a different signature once the burst settles. The debounce waits for
 * DEBOUNCE_MS of quiet, but never longer than DEBOUNCE_MAX_MS after the first event (a
 * database file written all the time in the app directory must not hold a reload off).
 *
 * Polling, where events are not available (the watch cannot be made: no inotify, its
 * limits reached) or asked for (MOONLET_RELOAD_POLL=1, for network file systems): the
 * signature every POLL_MS, a change taken once it held still for one tick. */
#include "reload.h"
#include "list.h"
#include "log.h"
#include "mem.h"
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define POLL_MS 250
#define DEBOUNCE_MS 20
#define DEBOUNCE_MAX_MS 60
#define MAX_DEPTH 16

typedef struct watch_s watch_t;

struct ml_reload_s {
  uv_loop_t *loop;
  uv_timer_t timer;          /* the debounce, or the poll's tick */
  char *appdir;
  uint64_t signature;        /* of the code that is loaded */
  uint64_t pending;          /* polling: a changed signature waiting to hold still */
  uint64_t first_event;      /* loop time of the first event of a burst, 0 if none */
  int polling;
  int walk_mark;             /* flips at each walk: a watch not marked is gone */
  int handles;               /* open: the timer and the watches; r goes at 0 */
  ml_list_t watches;
  void (*on_change)(void *ctx);
  void *ctx;
};

struct watch_s {
  uv_fs_event_t ev;
  ml_list_t link;
  int mark;
  char path[];
};

static uint64_t mix(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;   /* FNV-1a */
  return h;
}

static int is_lua(const char *name) {
  size_t n = strlen(name);
  return n >= 4 && strcmp(name + n - 4, ".lua") == 0;
}

static void handle_closed(uv_handle_t *h) {
  ml_reload_t *r = h->data;
  if (h != (uv_handle_t *)&r->timer) free(ml_list_item(h, watch_t, ev));
  if (--r->handles > 0) return;
  free(r->appdir);
  free(r);
}

/* --- watches ---------------------------------------------------------------------------- */

static void event_cb(uv_fs_event_t *ev, const char *name, int events, int status);

static watch_t *watch_find(ml_reload_t *r, const char *path) {
  ml_list_each(l, &r->watches) {
    watch_t *w = ml_list_item(l, watch_t, link);
    if (strcmp(w->path, path) == 0) return w;
  }
  return NULL;
}

/* Watches dir (marked as seen by this walk). -1 if the watch cannot be made. */
static int watch_dir(ml_reload_t *r, const char *dir) {
  watch_t *w = watch_find(r, dir);
  if (w) {
    w->mark = r->walk_mark;
    return 0;
  }
  size_t n = strlen(dir) + 1;
  w = ml_xmalloc(sizeof *w + n);
  memcpy(w->path, dir, n);
  w->mark = r->walk_mark;
  uv_fs_event_init(r->loop, &w->ev);
  w->ev.data = r;
  r->handles++;
  ml_list_push(&r->watches, &w->link);
  int rc = uv_fs_event_start(&w->ev, event_cb, dir, 0);
  uv_unref((uv_handle_t *)&w->ev);   /* a watch keeps no loop running */
  if (rc < 0) {
    ml_log(ML_LOG_DEBUG, "reload: cannot watch %s: %s", dir, uv_strerror(rc));
    return -1;
  }
  return 0;
}

static void watch_close(watch_t *w) {
  ml_list_remove(&w->link);
  uv_close((uv_handle_t *)&w->ev, handle_closed);
}

/* --- the walk --------------------------------------------------------------------------
 * Folds every .lua file below dir into h (order-independent: each file's own hash is
 * added); with r given, watches every directory it meets. *failed is set if a watch could
 * not be made. */
static uint64_t walk(ml_reload_t *r, const char *dir, uint64_t h, int depth, int *failed) {
  if (depth > MAX_DEPTH) return h;
  DIR *d = opendir(dir);
  if (!d) return h;
  if (r && watch_dir(r, dir)) *failed = 1;
  struct dirent *e;
  char path[4096];
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct stat st;
    if (stat(path, &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      h = walk(r, path, h, depth + 1, failed);
    } else if (is_lua(e->d_name)) {
      uint64_t f = mix(1469598103934665603ull, path, strlen(path));
      f = mix(f, &st.st_size, sizeof st.st_size);
      f = mix(f, &st.st_mtim, sizeof st.st_mtim);
      h += f;
    }
  }
  closedir(d);
  return h;
}

/* The signature now; with events, the watches made to match the directories. */
static uint64_t take_signature(ml_reload_t *r, int *failed) {
  if (r->polling) return walk(NULL, r->appdir, 0, 0, failed);
  r->walk_mark = !r->walk_mark;
  uint64_t sig = walk(r, r->appdir, 0, 0, failed);
  ml_list_each(l, &r->watches) {
    watch_t *w = ml_list_item(l, watch_t, link);
    if (w->mark != r->walk_mark) watch_close(w);   /* (ml_list_each allows the removal) */
  }
  return sig;
}

static void changed(ml_reload_t *r, uint64_t sig) {
  r->signature = sig;
  r->pending = 0;
  r->on_change(r->ctx);
}

/* --- polling ----------------------------------------------------------------------------- */

static void tick_cb(uv_timer_t *t) {
  ml_reload_t *r = t->data;
  int failed = 0;
  uint64_t sig = take_signature(r, &failed);
  if (sig == r->signature) {
    r->pending = 0;
    return;
  }
  if (sig != r->pending) {   /* still changing: wait for it to settle */
    r->pending = sig;
    return;
  }
  changed(r, sig);
}

static void start_polling(ml_reload_t *r, const char *why) {
  watch_t *w;
  while ((w = ml_list_first(&r->watches, watch_t, link))) watch_close(w);
  r->polling = 1;
  ml_log(ML_LOG_INFO, "reload: polling %s every %d ms (%s)", r->appdir, POLL_MS, why);
  uv_timer_start(&r->timer, tick_cb, POLL_MS, POLL_MS);
}

/* --- events ------------------------------------------------------------------------------ */

static void settle_cb(uv_timer_t *t) {
  ml_reload_t *r = t->data;
  r->first_event = 0;
  int failed = 0;
  uint64_t sig = take_signature(r, &failed);
  if (failed) start_polling(r, "a new directory cannot be watched");
  if (sig != r->signature) changed(r, sig);
}

static void event_cb(uv_fs_event_t *ev, const char *name, int events, int status) {
  ml_reload_t *r = ev->data;
  if (r->polling) return;
  /* a change to a file that is not code (a database, a log) is not ours to see; a name
   * that comes or goes may be a directory, or a .lua file renamed into place */
  if (status == 0 && name && !is_lua(name) && !(events & UV_RENAME)) return;
  uint64_t now = uv_now(r->loop);
  if (!r->first_event) r->first_event = now;
  uint64_t due = now + DEBOUNCE_MS, latest = r->first_event + DEBOUNCE_MAX_MS;
  uv_timer_start(&r->timer, settle_cb, (due < latest ? due : latest) - now, 0);
}

/* --- start and stop ---------------------------------------------------------------------- */

ml_reload_t *ml_reload_start(uv_loop_t *loop, const char *appdir, void (*on_change)(void *ctx),
                             void *ctx) {
  ml_reload_t *r = ml_xcalloc(1, sizeof *r);
  r->loop = loop;
  r->appdir = ml_xstrdup(appdir);
  r->on_change = on_change;
  r->ctx = ctx;
  ml_list_init(&r->watches);
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  r->handles = 1;
  uv_unref((uv_handle_t *)&r->timer);
  const char *force = getenv("MOONLET_RELOAD_POLL");
  int failed = 0;
  if (force && *force && strcmp(force, "0") != 0) {
    r->polling = 1;
    r->signature = take_signature(r, &failed);
    start_polling(r, "MOONLET_RELOAD_POLL");
    return r;
  }
  r->signature = take_signature(r, &failed);
  if (failed) start_polling(r, "file system events are not available");
  return r;
}

void ml_reload_stop(ml_reload_t *r) {
  if (!r) return;
  watch_t *w;
  while ((w = ml_list_first(&r->watches, watch_t, link))) watch_close(w);
  uv_close((uv_handle_t *)&r->timer, handle_closed);
}
