/* PostgreSQL prepared statements for db_pg.c: one connection's cache of what it prepared,
 * found by SQL text (a hash table) and kept in least-recently-used order. It holds names
 * and flags only: db_pg.c sends the PREPARE and DEALLOCATE that keep the server's side
 * the same. Pure (no libpq): tests/unit/db_pg_stmt_test.c covers it. */
#ifndef ML_DB_PG_STMT_H
#define ML_DB_PG_STMT_H
#include "list.h"
#include <stdint.h>

#define ML_DB_PG_STMT_MAX 256   /* statements per connection */

typedef struct ml_db_pg_stmt_s ml_db_pg_stmt_t;
struct ml_db_pg_stmt_s {
  char *sql;                 /* the key: the SQL text with $n placeholders */
  uint32_t hash;
  char name[24];             /* moonlet_<n>, unique on its connection */
  int ready;                 /* the server has it (0 while its PREPARE is in flight) */
  int stale;                 /* its plan went bad: DEALLOCATE, then prepare it again */
  int readonly;              /* db_pg.c's: it may share a Sync (ml_db_pg_sql_readonly) */
  ml_db_pg_stmt_t *hnext;    /* same bucket */
  ml_list_t lru;             /* in the cache's lru list */
};

/* A connection's statements; all zero is an empty cache. */
typedef struct {
  ml_db_pg_stmt_t **buckets; /* NULL until the first statement */
  ml_list_t lru;             /* newest first; set up with the buckets */
  int n;
  unsigned next_id;
} ml_db_pg_stmt_cache_t;

/* The hash ml_db_pg_stmt_find and ml_db_pg_stmt_add take (callers compute it once). */
uint32_t ml_db_pg_stmt_hash(const char *sql);
/* The statement for sql, or NULL. */
ml_db_pg_stmt_t *ml_db_pg_stmt_find(ml_db_pg_stmt_cache_t *c, const char *sql, uint32_t hash);
/* A new statement for sql (copied), the newest, with a fresh name; not ready. The caller
 * keeps the cache within ML_DB_PG_STMT_MAX (ml_db_pg_stmt_full). */
ml_db_pg_stmt_t *ml_db_pg_stmt_add(ml_db_pg_stmt_cache_t *c, const char *sql, uint32_t hash);
/* s was used: it becomes the newest. */
void ml_db_pg_stmt_touch(ml_db_pg_stmt_cache_t *c, ml_db_pg_stmt_t *s);
/* Forgets and frees s (the server's copy, if any, is the caller's business). */
void ml_db_pg_stmt_forget(ml_db_pg_stmt_cache_t *c, ml_db_pg_stmt_t *s);
/* Forgets everything; the cache is empty again. */
void ml_db_pg_stmt_clear(ml_db_pg_stmt_cache_t *c);
/* 1 when adding one more would pass ML_DB_PG_STMT_MAX (the oldest is then the one to go). */
int ml_db_pg_stmt_full(const ml_db_pg_stmt_cache_t *c);
/* The least / most recently used statement, or NULL when the cache is empty. */
ml_db_pg_stmt_t *ml_db_pg_stmt_oldest(ml_db_pg_stmt_cache_t *c);
ml_db_pg_stmt_t *ml_db_pg_stmt_newest(ml_db_pg_stmt_cache_t *c);
#endif
