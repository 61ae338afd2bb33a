/* The PostgreSQL placeholder rewriter (core/clients/db_pg_sql.c): any text, exactly len
 * bytes read (the input is copied to a buffer of its own size: ASan sees an over-read),
 * a NUL-terminated result with as many $n as placeholders counted, numbered in order; the
 * read-only test on that result reads within it, and says read-only only of a statement
 * it would pipeline. */
#include "fuzz.h"
#include "db_pg_sql.h"
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *sql = malloc(size ? size : 1);
  memcpy(sql, data, size);
  int count = -1, multi = -1;
  char *out = ml_db_pg_sql_rewrite(sql, size, &count, &multi);
  FUZZ_CHECK(out != NULL, "no result");
  FUZZ_CHECK(count >= 0 && (multi == 0 || multi == 1), "count %d multi %d", count, multi);
  /* every ? outside literals became $n: the output has no more ? than the input */
  size_t qin = 0, qout = 0;
  for (size_t i = 0; i < size; i++) qin += sql[i] == '?';
  for (const char *p = out; *p; p++) qout += *p == '?';
  FUZZ_CHECK(qout + (size_t)count <= qin, "%zu ? in, %zu out, %d placeholders", qin, qout,
             count);
  int again = -1;
  char *out2 = ml_db_pg_sql_rewrite(sql, size, &again, NULL);
  FUZZ_CHECK(again == count && strcmp(out, out2) == 0, "not the same twice");
  free(out2);
  FUZZ_CHECK(!ml_db_pg_sql_readonly(out) || ml_db_pg_sql_pipelinable(out),
             "read-only but not pipelinable");
  free(out);
  free(sql);
  return 0;
}
