/* The --reload watcher (see reload.h). A change is a different signature: a hash over
 * the path, size and modification time of every .lua file. A burst of writes (an editor
 * saving) is settled by waiting until the signature holds still for one tick. */
#include "reload.h"
#include "mem.h"
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TICK_MS 250

struct ml_reload_s {
  uv_timer_t timer;
  char *appdir;
  uint64_t signature;        /* of the code that is loaded */
  uint64_t pending;          /* a changed signature waiting to hold still, 0 if none */
  void (*on_change)(void *ctx);
  void *ctx;
};

static uint64_t mix(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;   /* FNV-1a */
  return h;
}

/* Folds every .lua file below dir into h; hidden directories are skipped. */
static uint64_t scan(const char *dir, uint64_t h, int depth) {
  DIR *d = opendir(dir);
  if (!d || depth > 16) {
    if (d) closedir(d);
    return h;
  }
  struct dirent *e;
  char path[4096];
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    struct stat st;
    if (stat(path, &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      h = scan(path, h, depth + 1);
    } else {
      size_t n = strlen(e->d_name);
      if (n < 4 || strcmp(e->d_name + n - 4, ".lua") != 0) continue;
      /* order-independent: add each file's own hash */
      uint64_t f = mix(1469598103934665603ull, path, strlen(path));
      f = mix(f, &st.st_size, sizeof st.st_size);
      f = mix(f, &st.st_mtim, sizeof st.st_mtim);
      h += f;
    }
  }
  closedir(d);
  return h;
}

static void tick_cb(uv_timer_t *t) {
  ml_reload_t *r = t->data;
  uint64_t sig = scan(r->appdir, 0, 0);
  if (sig == r->signature) {
    r->pending = 0;
    return;
  }
  if (sig != r->pending) {   /* still changing: wait for it to settle */
    r->pending = sig;
    return;
  }
  r->signature = sig;
  r->pending = 0;
  r->on_change(r->ctx);
}

ml_reload_t *ml_reload_start(uv_loop_t *loop, const char *appdir, void (*on_change)(void *ctx),
                             void *ctx) {
  ml_reload_t *r = ml_xcalloc(1, sizeof *r);
  r->appdir = ml_xstrdup(appdir);
  r->on_change = on_change;
  r->ctx = ctx;
  r->signature = scan(appdir, 0, 0);
  uv_timer_init(loop, &r->timer);
  r->timer.data = r;
  uv_timer_start(&r->timer, tick_cb, TICK_MS, TICK_MS);
  uv_unref((uv_handle_t *)&r->timer);
  return r;
}

static void closed_cb(uv_handle_t *h) {
  ml_reload_t *r = h->data;
  free(r->appdir);
  free(r);
}

void ml_reload_stop(ml_reload_t *r) {
  if (r) uv_close((uv_handle_t *)&r->timer, closed_cb);
}
