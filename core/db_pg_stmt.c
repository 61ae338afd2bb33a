/* PostgreSQL prepared statements (see db_pg_stmt.h): a chained hash table by SQL text and
 * a doubly linked list from newest to oldest. */
#include "db_pg_stmt.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 512          /* a power of 2, twice ML_DB_PG_STMT_MAX */

uint32_t ml_db_pg_stmt_hash(const char *s) {
  uint32_t h = 2166136261u;   /* FNV-1a */
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

ml_db_pg_stmt_t *ml_db_pg_stmt_find(ml_db_pg_stmt_cache_t *c, const char *sql, uint32_t hash) {
  if (!c->buckets) return NULL;
  for (ml_db_pg_stmt_t *s = c->buckets[hash & (BUCKETS - 1)]; s; s = s->hnext)
    if (s->hash == hash && strcmp(s->sql, sql) == 0) return s;
  return NULL;
}

static void lru_unlink(ml_db_pg_stmt_cache_t *c, ml_db_pg_stmt_t *s) {
  if (s->newer) s->newer->older = s->older; else c->newest = s->older;
  if (s->older) s->older->newer = s->newer; else c->oldest = s->newer;
  s->newer = s->older = NULL;
}

static void lru_push(ml_db_pg_stmt_cache_t *c, ml_db_pg_stmt_t *s) {
  s->newer = NULL;
  s->older = c->newest;
  if (c->newest) c->newest->newer = s; else c->oldest = s;
  c->newest = s;
}

void ml_db_pg_stmt_touch(ml_db_pg_stmt_cache_t *c, ml_db_pg_stmt_t *s) {
  if (c->newest == s) return;
  lru_unlink(c, s);
  lru_push(c, s);
}

ml_db_pg_stmt_t *ml_db_pg_stmt_add(ml_db_pg_stmt_cache_t *c, const char *sql, uint32_t hash) {
  if (!c->buckets) {
    c->buckets = calloc(BUCKETS, sizeof *c->buckets);
    if (!c->buckets) abort();
  }
  ml_db_pg_stmt_t *s = calloc(1, sizeof *s);
  if (!s) abort();
  s->sql = strdup(sql);
  if (!s->sql) abort();
  s->hash = hash;
  snprintf(s->name, sizeof s->name, "moonlet_%u", ++c->next_id);
  ml_db_pg_stmt_t **b = &c->buckets[hash & (BUCKETS - 1)];
  s->hnext = *b;
  *b = s;
  lru_push(c, s);
  c->n++;
  return s;
}

void ml_db_pg_stmt_forget(ml_db_pg_stmt_cache_t *c, ml_db_pg_stmt_t *s) {
  ml_db_pg_stmt_t **p = &c->buckets[s->hash & (BUCKETS - 1)];
  while (*p != s) p = &(*p)->hnext;
  *p = s->hnext;
  lru_unlink(c, s);
  c->n--;
  free(s->sql);
  free(s);
}

void ml_db_pg_stmt_clear(ml_db_pg_stmt_cache_t *c) {
  while (c->oldest) ml_db_pg_stmt_forget(c, c->oldest);
  free(c->buckets);
  c->buckets = NULL;
}

int ml_db_pg_stmt_full(const ml_db_pg_stmt_cache_t *c) { return c->n >= ML_DB_PG_STMT_MAX; }
