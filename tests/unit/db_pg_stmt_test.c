/* The prepared-statement cache of a PostgreSQL connection (core/clients/db_pg_stmt.c): lookup by
 * text, names, least-recently-used order, forgetting. */
#include "db_pg_stmt.h"
#include "unit.h"

static ml_db_pg_stmt_t *add(ml_db_pg_stmt_cache_t *c, const char *sql) {
  return ml_db_pg_stmt_add(c, sql, ml_db_pg_stmt_hash(sql));
}

static ml_db_pg_stmt_t *find(ml_db_pg_stmt_cache_t *c, const char *sql) {
  return ml_db_pg_stmt_find(c, sql, ml_db_pg_stmt_hash(sql));
}

TEST(statements_are_found_by_their_text) {
  ml_db_pg_stmt_cache_t c = {0};
  CHECK(find(&c, "SELECT 1") == NULL);   /* an empty cache has no table yet */
  ml_db_pg_stmt_t *a = add(&c, "SELECT 1"), *b = add(&c, "SELECT $1");
  CHECK(find(&c, "SELECT 1") == a);
  CHECK(find(&c, "SELECT $1") == b);
  CHECK(find(&c, "SELECT 2") == NULL);
  CHECK_EQ_STR(a->name, "moonlet_1");
  CHECK_EQ_STR(b->name, "moonlet_2");
  CHECK(!a->ready && !a->stale);
  CHECK_EQ_INT(c.n, 2);
  ml_db_pg_stmt_clear(&c);
  CHECK_EQ_INT(c.n, 0);
  CHECK(c.buckets == NULL && ml_db_pg_stmt_newest(&c) == NULL &&
        ml_db_pg_stmt_oldest(&c) == NULL);
}

TEST(names_are_never_reused_on_a_connection) {
  ml_db_pg_stmt_cache_t c = {0};
  ml_db_pg_stmt_forget(&c, add(&c, "SELECT 1"));
  CHECK(find(&c, "SELECT 1") == NULL);
  CHECK_EQ_STR(add(&c, "SELECT 1")->name, "moonlet_2");   /* the server may still have _1 */
  ml_db_pg_stmt_clear(&c);
}

TEST(the_least_recently_used_is_oldest) {
  ml_db_pg_stmt_cache_t c = {0};
  ml_db_pg_stmt_t *a = add(&c, "a"), *b = add(&c, "b"), *d = add(&c, "d");
  CHECK(ml_db_pg_stmt_oldest(&c) == a && ml_db_pg_stmt_newest(&c) == d);
  ml_db_pg_stmt_touch(&c, a);
  CHECK(ml_db_pg_stmt_oldest(&c) == b && ml_db_pg_stmt_newest(&c) == a);
  ml_db_pg_stmt_touch(&c, a);   /* already the newest */
  CHECK(ml_db_pg_stmt_oldest(&c) == b && ml_db_pg_stmt_newest(&c) == a);
  ml_db_pg_stmt_forget(&c, b);
  CHECK(ml_db_pg_stmt_oldest(&c) == d && ml_db_pg_stmt_newest(&c) == a);
  CHECK(find(&c, "b") == NULL && find(&c, "d") == d);
  ml_db_pg_stmt_clear(&c);
}

TEST(full_at_the_limit) {
  ml_db_pg_stmt_cache_t c = {0};
  char sql[32];
  for (int i = 0; i < ML_DB_PG_STMT_MAX; i++) {
    CHECK(!ml_db_pg_stmt_full(&c));
    snprintf(sql, sizeof sql, "SELECT %d", i);
    add(&c, sql);
  }
  CHECK(ml_db_pg_stmt_full(&c));
  for (int i = 0; i < ML_DB_PG_STMT_MAX; i++) {   /* every one still found: shared buckets */
    snprintf(sql, sizeof sql, "SELECT %d", i);
    CHECK(find(&c, sql) != NULL);
  }
  CHECK_EQ_STR(ml_db_pg_stmt_oldest(&c)->sql, "SELECT 0");
  ml_db_pg_stmt_forget(&c, ml_db_pg_stmt_oldest(&c));
  CHECK(!ml_db_pg_stmt_full(&c));
  ml_db_pg_stmt_clear(&c);
}

int main(void) {
  RUN(statements_are_found_by_their_text);
  RUN(names_are_never_reused_on_a_connection);
  RUN(the_least_recently_used_is_oldest);
  RUN(full_at_the_limit);
  return UNIT_DONE();
}
