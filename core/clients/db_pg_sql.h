/* PostgreSQL's SQL text for db_pg.c: moonlet's `?` placeholders rewritten as $1..$n. Pure
 * (no libpq, no Lua): tests/unit/db_pg_sql_test.c covers it. */
#ifndef ML_DB_PG_SQL_H
#define ML_DB_PG_SQL_H
#include <stddef.h>

/* Rewrites moonlet's `?` placeholders as PostgreSQL's $1..$n. A `?` inside a string
 * literal, a quoted identifier, a comment or a dollar-quoted body is left alone, and `??`
 * stands for a literal `?` (jsonb operators). Reads exactly len bytes of sql. Returns a
 * malloc'd, NUL-terminated string and the number of placeholders in *count. *multi (when
 * not NULL) is set when a `;` outside literals and comments is followed by more than
 * blanks, comments or `;` (several commands). */
char *ml_db_pg_sql_rewrite(const char *sql, size_t len, int *count, int *multi);

/* 1 when sql (one command) cannot change the transaction state of its connection, so it
 * may be pipelined behind other statements outside any transaction block: its first
 * keyword (after blanks, comments and opening parentheses) is SELECT, WITH, VALUES,
 * TABLE, INSERT, UPDATE or DELETE, in any case. Else 0 (BEGIN, COMMIT, CALL, DO, SET,
 * DDL, ...). */
int ml_db_pg_sql_pipelinable(const char *sql);

/* 1 when sql can only read, so that pipelined statements may share one Sync (one implicit
 * transaction: a failure rolls back the others' writes): a SELECT, VALUES or TABLE without
 * FOR (row locks) or INTO, whose calls are only keywords and a short list of built-in
 * functions (count, sum, min, max, avg, coalesce, lower, ...; not schema-qualified), with
 * no quoted name, dollar quote, E'' literal, `;` or operator outside + - * / = < > :: [].
 * Conservative: nextval(), pg_advisory_lock() or a user's function make it 0. What a view
 * or an operator on a user's type runs is not seen. */
int ml_db_pg_sql_readonly(const char *sql);
#endif
