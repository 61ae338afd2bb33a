/* PostgreSQL prepared statements (see db_pg_stmt.h): a chained hash table by SQL text and
 * a list from newest to oldest. */
#include "db_pg_stmt.h"
#include "mem.h"
#include "hash.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 512          /* a power of 2, twice ML_DB_PG_STMT_MAX */

uint32_t ml_db_pg_stmt_hash(const char *sql) {
  return ml_hash(sql, strlen(sql));
}

ml_db_pg_stmt_t *ml_db_pg_stmt_find(ml_db_pg_stmt_cache_t *c, const char *sql, uint32_t hash) {
  if (!c->buckets) return NULL;
  for (ml_db_pg_stmt_t *s = c->buckets[hash & (BUCKETS - 1)]; s; s = s->hnext)
    if (s->hash == hash && strcmp(s->sql, sql) == 0) return s;
  return NULL;
}

ml_db_pg_stmt_t *ml_db_pg_stmt_oldest(ml_db_pg_stmt_cache_t *c) {
  return c->buckets ? ml_list_last(&c->lru, ml_db_pg_stmt_t, lru) : NULL;
}

ml_db_pg_stmt_t *ml_db_pg_stmt_newest(ml_db_pg_stmt_cache_t *c) {
  return c->buckets ? ml_list_first(&c->lru, ml_db_pg_stmt_t, lru) : NULL;
}

void ml_db_pg_stmt_touch(ml_db_pg_stmt_cache_t *c, ml_db_pg_stmt_t *s) {
  ml_list_remove(&s->lru);
  ml_list_unshift(&c->lru, &s->lru);
}

ml_db_pg_stmt_t *ml_db_pg_stmt_add(ml_db_pg_stmt_cache_t *c, const char *sql, uint32_t hash) {
  if (!c->buckets) {
    c->buckets = ml_xcalloc(BUCKETS, sizeof *c->buckets);
    ml_list_init(&c->lru);
  }
  ml_db_pg_stmt_t *s = ml_xcalloc(1, sizeof *s);
  s->sql = ml_xstrdup(sql);
  s->hash = hash;
  snprintf(s->name, sizeof s->name, "moonlet_%u", ++c->next_id);
  ml_db_pg_stmt_t **b = &c->buckets[hash & (BUCKETS - 1)];
  s->hnext = *b;
  *b = s;
  ml_list_unshift(&c->lru, &s->lru);
  c->n++;
  return s;
}

void ml_db_pg_stmt_forget(ml_db_pg_stmt_cache_t *c, ml_db_pg_stmt_t *s) {
  ml_db_pg_stmt_t **p = &c->buckets[s->hash & (BUCKETS - 1)];
  while (*p != s) p = &(*p)->hnext;
  *p = s->hnext;
  ml_list_remove(&s->lru);
  c->n--;
  free(s->sql);
  free(s);
}

void ml_db_pg_stmt_clear(ml_db_pg_stmt_cache_t *c) {
  ml_db_pg_stmt_t *s;
  while ((s = ml_db_pg_stmt_oldest(c))) ml_db_pg_stmt_forget(c, s);
  free(c->buckets);
  c->buckets = NULL;
}

int ml_db_pg_stmt_full(const ml_db_pg_stmt_cache_t *c) { return c->n >= ML_DB_PG_STMT_MAX; }
