/* The `?` -> $n rewrite for PostgreSQL (core/clients/db_pg_sql.c): what stays, what becomes a
 * parameter, when a text holds several commands. Every input is placed right before a
 * PROT_NONE page (as picohttpparser's tests do) and given without a NUL, so reading one
 * byte past it crashes. */
#include "db_pg_sql.h"
#include "unit.h"
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* s copied so that its last byte is the last readable one. */
static const char *guarded(const char *s, size_t len) {
  static char *area;
  static size_t page;
  if (!area) {
    page = (size_t)sysconf(_SC_PAGESIZE);
    area = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED || mprotect(area + page, page, PROT_NONE)) abort();
  }
  if (len > page) abort();
  memcpy(area + page - len, s, len);
  return area + page - len;
}

typedef struct {
  const char *sql, *want;
  int count;
} rewrite_case_t;

/* Runs the cases; the first that differs is reported with its index. */
static void check_rewrites(const rewrite_case_t *cases, size_t n) {
  for (size_t i = 0; i < n; i++) {
    size_t len = strlen(cases[i].sql);
    int count = -1;
    char *r = ml_db_pg_sql_rewrite(guarded(cases[i].sql, len), len, &count, NULL);
    if (strcmp(r, cases[i].want) != 0 || count != cases[i].count) {
      printf("  case %zu: \"%s\" -> \"%s\" (%d), expected \"%s\" (%d)\n", i, cases[i].sql, r,
             count, cases[i].want, cases[i].count);
      unit_cur_failed = 1;
    }
    free(r);
  }
}
#define CHECK_REWRITES(cases) check_rewrites(cases, sizeof cases / sizeof cases[0])

TEST(placeholders_are_numbered_in_order) {
  static const rewrite_case_t cases[] = {
    {"SELECT * FROM t WHERE a = ? AND b = ?", "SELECT * FROM t WHERE a = $1 AND b = $2", 2},
    {"?,?,?,?,?,?,?,?,?,?,?,?", "$1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12", 12},
    {"?", "$1", 1},
    {"SELECT 1", "SELECT 1", 0},
    {"", "", 0},
  };
  CHECK_REWRITES(cases);
}

TEST(double_question_mark_is_a_literal_one) {
  static const rewrite_case_t cases[] = {
    {"SELECT data ?? 'k', ? FROM t", "SELECT data ? 'k', $1 FROM t", 1},
    {"???", "?$1", 1},
    {"??", "?", 0},
  };
  CHECK_REWRITES(cases);
}

TEST(string_literals_keep_their_question_marks) {
  static const rewrite_case_t cases[] = {
    {"SELECT 'a?b', ?", "SELECT 'a?b', $1", 1},
    {"SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1", 1},   /* '' inside */
    {"SELECT 'x\\', ?", "SELECT 'x\\', $1", 1},           /* a backslash is plain */
    {"SELECT E'x\\'?', ?", "SELECT E'x\\'?', $1", 1},     /* E'' takes escapes */
    {"SELECT e'\\'?', ?", "SELECT e'\\'?', $1", 1},
    {"SELECT type'x\\', ?", "SELECT type'x\\', $1", 1},   /* a name ending in e: no E'' */
    {"'unterminated ?", "'unterminated ?", 0},
    {"E'\\", "E'\\", 0},
  };
  CHECK_REWRITES(cases);
}

TEST(quoted_identifiers_keep_their_question_marks) {
  static const rewrite_case_t cases[] = {
    {"SELECT \"a?\"\"b\" FROM t WHERE x = ?", "SELECT \"a?\"\"b\" FROM t WHERE x = $1", 1},
    {"\"open ?", "\"open ?", 0},
  };
  CHECK_REWRITES(cases);
}

TEST(comments_keep_their_question_marks) {
  static const rewrite_case_t cases[] = {
    {"SELECT ? -- what?\n, ?", "SELECT $1 -- what?\n, $2", 2},
    {"-- ?", "-- ?", 0},
    {"SELECT 1 - ?", "SELECT 1 - $1", 1},                    /* one dash is a minus */
    {"/* ? /* ? */ ? */ ?", "/* ? /* ? */ ? */ $1", 1},      /* they nest */
    {"SELECT 4 / ?", "SELECT 4 / $1", 1},
    {"/* open ?", "/* open ?", 0},
    {"?-", "$1-", 1},
    {"?/", "$1/", 1},
  };
  CHECK_REWRITES(cases);
}

TEST(dollar_quoted_bodies_keep_their_question_marks) {
  static const rewrite_case_t cases[] = {
    {"SELECT $$a?$$, ?", "SELECT $$a?$$, $1", 1},
    {"$fn$ ? $x$ ? $fn$ ?", "$fn$ ? $x$ ? $fn$ $1", 1},   /* only its own tag ends it */
    {"$t$ open ?", "$t$ open ?", 0},
    {"SELECT $1, ?", "SELECT $1, $1", 1},                 /* $1 is no tag */
    {"SELECT a$b$ ?", "SELECT a$b$ $1", 1},               /* nor a $ inside a name */
    {"SELECT ?, $", "SELECT $1, $", 1},
    {"$a b$ ?", "$a b$ $1", 1},                           /* a blank ends the would-be tag */
  };
  CHECK_REWRITES(cases);
}

TEST(several_commands_are_noticed) {
  static const struct {
    const char *sql;
    int multi;
  } cases[] = {
    {"CREATE TABLE a (x int); INSERT INTO a VALUES (1)", 1},
    {"BEGIN;COMMIT", 1},
    {"SELECT 1;", 0},
    {"SELECT 1; ;\n\t ", 0},
    {"SELECT 1; -- done\n", 0},
    {"SELECT 1; /* done */", 0},
    {"SELECT 'a;b', \"c;d\", $$;x$$ -- ;y\n", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    size_t len = strlen(cases[i].sql);
    int count, multi = -1;
    free(ml_db_pg_sql_rewrite(guarded(cases[i].sql, len), len, &count, &multi));
    CHECK_EQ_INT(multi, cases[i].multi);
  }
}

TEST(only_len_bytes_are_read) {
  int n;
  char *r = ml_db_pg_sql_rewrite("SELECT ? ignored ?", 8, &n, NULL);   /* multi is optional */
  CHECK_EQ_STR(r, "SELECT $1");
  CHECK_EQ_INT(n, 1);
  free(r);
}

TEST(pipelinable_statements_cannot_change_the_transaction_state) {
  static const struct { const char *sql; int ok; } cases[] = {
    {"SELECT 1", 1}, {"  select * from t", 1}, {"\n(SELECT 1) UNION (SELECT 2)", 1},
    {"-- why\nWITH x AS (SELECT 1) SELECT * FROM x", 1}, {"/* a /* b */ */ VALUES (1)", 1},
    {"TABLE t", 1}, {"insert into t values ($1)", 1}, {"Update t SET a = 1", 1},
    {"DELETE FROM t", 1},
    {"BEGIN", 0}, {"COMMIT", 0}, {"ROLLBACK", 0}, {"START TRANSACTION", 0}, {"SAVEPOINT a", 0},
    {"CALL p()", 0}, {"DO $$ BEGIN COMMIT; END $$", 0}, {"SET search_path = x", 0},
    {"CREATE TABLE t (a int)", 0}, {"SELECTED", 0}, {"SELECT_x", 0}, {"", 0}, {"-- only", 0},
    {"/* unterminated", 0}, {"LOCK t", 0}, {"PREPARE TRANSACTION 'x'", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    CHECK_EQ_INT(ml_db_pg_sql_pipelinable(cases[i].sql), cases[i].ok);
}

TEST(readonly_statements_can_only_read) {
  static const struct { const char *sql; int ok; } cases[] = {
    {"SELECT abalance FROM pgbench_accounts WHERE aid = $1", 1},
    {"select count(*), max(a) from t where b in ($1, $2) and c <> 'it''s (x)'", 1},
    {"-- why\n(SELECT 1) UNION (SELECT 2)", 1}, {"VALUES (1), ($1::int)", 1}, {"TABLE t", 1},
    {"SELECT a FROM t /* nextval( */ WHERE a = $1 -- setval(\n", 1},
    {"SELECT * FROM t WHERE a = ANY ($1::int[])", 1},
    {"SELECT * FROM t FOR UPDATE", 0}, {"SELECT * FROM t for share", 0},
    {"SELECT a INTO b FROM t", 0}, {"SELECT nextval('s')", 0},
    {"SELECT pg_advisory_lock(1)", 0}, {"SELECT public.count(a) FROM t", 0},
    {"SELECT \"count\"(a) FROM t", 0}, {"SELECT f (1)", 0}, {"SELECT $$x$$", 0},
    {"SELECT E'\\x'", 0}, {"SELECT 1; DELETE FROM t", 0}, {"SELECT a @@ b FROM t", 0},
    {"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", 0}, {"INSERT INTO t VALUES (1)", 0},
    {"UPDATE t SET a = 1", 0}, {"SELECTED", 0}, {"", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (ml_db_pg_sql_readonly(cases[i].sql) != cases[i].ok) fprintf(stderr, "%s\n", cases[i].sql);
    CHECK_EQ_INT(ml_db_pg_sql_readonly(cases[i].sql), cases[i].ok);
  }
}

int main(void) {
  RUN(placeholders_are_numbered_in_order);
  RUN(double_question_mark_is_a_literal_one);
  RUN(string_literals_keep_their_question_marks);
  RUN(quoted_identifiers_keep_their_question_marks);
  RUN(comments_keep_their_question_marks);
  RUN(dollar_quoted_bodies_keep_their_question_marks);
  RUN(several_commands_are_noticed);
  RUN(only_len_bytes_are_read);
  RUN(pipelinable_statements_cannot_change_the_transaction_state);
  RUN(readonly_statements_can_only_read);
  return UNIT_DONE();
}
