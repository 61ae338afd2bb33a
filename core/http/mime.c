/* The extension -> media type table (see mime.h): a sorted array searched by bisection.
 * The built-in entries come first; /etc/mime.types adds to them and wins where it has the
 * same extension. Extensions are stored lower-case. */
#include "mime.h"
#include "mem.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIME_TYPES_PATH "/etc/mime.types"

typedef struct {
  char *ext;
  char *type;
  int from_file;             /* the file's entry wins over the built-in one */
} entry_t;

typedef struct {
  entry_t *e;
  size_t n, cap;
} table_t;

static table_t table;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* What a browser needs to render a site when the system has no mime.types. */
static const char *const builtin[][2] = {
    {"html", "text/html"}, {"htm", "text/html"}, {"css", "text/css"},
    {"js", "text/javascript"}, {"mjs", "text/javascript"}, {"json", "application/json"},
    {"map", "application/json"}, {"txt", "text/plain"}, {"md", "text/markdown"},
    {"csv", "text/csv"}, {"xml", "application/xml"}, {"png", "image/png"},
    {"jpg", "image/jpeg"}, {"jpeg", "image/jpeg"}, {"gif", "image/gif"},
    {"svg", "image/svg+xml"}, {"webp", "image/webp"}, {"avif", "image/avif"},
    {"ico", "image/vnd.microsoft.icon"}, {"wasm", "application/wasm"},
    {"pdf", "application/pdf"}, {"zip", "application/zip"}, {"gz", "application/gzip"},
    {"woff", "font/woff"}, {"woff2", "font/woff2"}, {"ttf", "font/ttf"},
    {"otf", "font/otf"}, {"mp4", "video/mp4"}, {"webm", "video/webm"},
    {"mp3", "audio/mpeg"}, {"ogg", "audio/ogg"}, {"wav", "audio/wav"},
    {"webmanifest", "application/manifest+json"},
};

/* By extension; for the same extension the file's entry first. */
static int entry_cmp(const void *a, const void *b) {
  const entry_t *x = a, *y = b;
  int c = strcmp(x->ext, y->ext);
  return c ? c : y->from_file - x->from_file;
}

static void add(table_t *t, const char *ext, size_t elen, const char *type, size_t tlen,
                int from_file) {
  if (t->n == t->cap) {
    t->cap = t->cap ? t->cap * 2 : 512;
    t->e = ml_xrealloc(t->e, t->cap * sizeof *t->e);
  }
  entry_t *e = &t->e[t->n++];
  e->ext = ml_oom_check(strndup(ext, elen));
  for (char *s = e->ext; *s; s++)
    if (*s >= 'A' && *s <= 'Z') *s = (char)(*s - 'A' + 'a');
  e->type = ml_oom_check(strndup(type, tlen));
  e->from_file = from_file;
}

/* Reads a mime.types file ("type ext ext ...", # comments) into t; -1 if unreadable. */
static int read_file(table_t *t, const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[1024];
  int count = 0;
  while (fgets(line, sizeof line, f)) {
    char *hash = strchr(line, '#');
    if (hash) *hash = '\0';
    const char *sep = " \t\r\n";
    char *save = NULL, *type = strtok_r(line, sep, &save);
    if (!type || !strchr(type, '/')) continue;
    for (char *ext = strtok_r(NULL, sep, &save); ext; ext = strtok_r(NULL, sep, &save)) {
      add(t, ext, strlen(ext), type, strlen(type), 1);
      count++;
    }
  }
  fclose(f);
  return count;
}

static void table_free(table_t *t) {
  for (size_t i = 0; i < t->n; i++) {
    free(t->e[i].ext);
    free(t->e[i].type);
  }
  free(t->e);
  *t = (table_t){0};
}

/* Built-in entries, then the file's; sorted, one entry per extension. */
static int build(table_t *t, const char *path) {
  for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
    add(t, builtin[i][0], strlen(builtin[i][0]), builtin[i][1], strlen(builtin[i][1]), 0);
  int count = path ? read_file(t, path) : 0;
  qsort(t->e, t->n, sizeof *t->e, entry_cmp);
  size_t out = 0;
  for (size_t i = 0; i < t->n; i++) {
    if (out > 0 && strcmp(t->e[out - 1].ext, t->e[i].ext) == 0) {
      free(t->e[i].ext);
      free(t->e[i].type);
      continue;
    }
    t->e[out++] = t->e[i];
  }
  t->n = out;
  return count;
}

static void init_once(void) {
  build(&table, MIME_TYPES_PATH);
}

void ml_mime_init(void) {
  pthread_once(&once, init_once);
}

int ml_mime_load(const char *path) {
  ml_mime_init();
  table_t t = {0};
  int count = build(&t, path);
  table_free(&table);
  table = t;
  return count;
}

static const char *lookup(const char *ext, size_t len) {
  char key[32];
  if (len == 0 || len >= sizeof key) return NULL;
  for (size_t i = 0; i < len; i++)
    key[i] = (ext[i] >= 'A' && ext[i] <= 'Z') ? (char)(ext[i] - 'A' + 'a') : ext[i];
  key[len] = '\0';
  size_t lo = 0, hi = table.n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(table.e[mid].ext, key);
    if (c == 0) return table.e[mid].type;
    if (c < 0) lo = mid + 1; else hi = mid;
  }
  return NULL;
}

/* Text a browser should decode as UTF-8: text/..., JavaScript, JSON, XML and their +json
 * and +xml kin (not image/svg+xml, an image). */
static int is_text(const char *type) {
  if (strncmp(type, "text/", 5) == 0) return 1;
  if (strncmp(type, "application/", 12) != 0) return 0;
  const char *sub = type + 12;
  size_t n = strlen(sub);
  return strcmp(sub, "javascript") == 0 || strcmp(sub, "json") == 0 ||
         strcmp(sub, "xml") == 0 || (n > 5 && strcmp(sub + n - 5, "+json") == 0) ||
         (n > 4 && strcmp(sub + n - 4, "+xml") == 0);
}

size_t ml_mime_content_type(const char *name, size_t len, char *out, size_t cap) {
  ml_mime_init();
  const char *dot = NULL;
  for (size_t i = len; i > 0; i--) {
    if (name[i - 1] == '/') break;
    if (name[i - 1] == '.') {
      dot = name + i - 1;
      break;
    }
  }
  const char *type = dot ? lookup(dot + 1, (size_t)(name + len - dot - 1)) : NULL;
  if (!type) type = "application/octet-stream";
  int n = snprintf(out, cap, "%s%s", type, is_text(type) ? "; charset=utf-8" : "");
  return n < 0 ? 0 : (size_t)n >= cap ? cap - 1 : (size_t)n;
}
