/* PostgreSQL's SQL text (see db_pg_sql.h): one pass over the statement that knows its
 * literals, quoted names, comments and dollar quotes, so that only a `?` of the SQL itself
 * becomes a parameter. */
#include "db_pg_sql.h"
#include "buf.h"
#include <string.h>
#include <strings.h>

static int ident_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '$' || (unsigned char)c >= 0x80;
}

/* Whether c may start a literal, a quoted name, a comment, a dollar quote, a placeholder
 * or a new command: the rewrite copies runs of other characters in one go. */
static int may_start(char c) {
  switch (c) {
  case '\'': case '"': case '-': case '/': case '$': case '?': case ';': return 1;
  default: return 0;
  }
}

/* Length of a dollar-quote tag ($$ or $name$) starting at p, or 0 when p is not one. */
static size_t dollar_tag(const char *p, const char *end) {
  const char *q = p + 1;
  if (q < end && *q >= '0' && *q <= '9') return 0;   /* $1: a parameter */
  while (q < end && *q != '$') {
    if (!ident_char(*q) || *q == '$') return 0;
    q++;
  }
  return q < end ? (size_t)(q - p + 1) : 0;
}

char *ml_db_pg_sql_rewrite(const char *sql, size_t len, int *count, int *multi) {
  ml_buf_t out = {0};
  const char *p = sql, *end = sql + len;
  int n = 0, semi = 0;
  if (multi) *multi = 0;
  ml_buf_reserve(&out, len + 16);
  while (p < end) {
    char c = *p;
    const char *start = p;
    if (c == '\'') {   /* string literal; E'...' takes backslash escapes */
      int esc = p > sql && (p[-1] == 'e' || p[-1] == 'E') && (p - 1 == sql || !ident_char(p[-2]));
      p++;
      while (p < end) {
        if (esc && *p == '\\' && p + 1 < end) { p += 2; continue; }
        if (*p == '\'') {
          if (p + 1 < end && p[1] == '\'') { p += 2; continue; }
          p++;
          break;
        }
        p++;
      }
    } else if (c == '"') {   /* quoted identifier */
      p++;
      while (p < end) {
        if (*p == '"') {
          if (p + 1 < end && p[1] == '"') { p += 2; continue; }
          p++;
          break;
        }
        p++;
      }
    } else if (c == '-' && p + 1 < end && p[1] == '-') {   /* line comment */
      while (p < end && *p != '\n') p++;
    } else if (c == '/' && p + 1 < end && p[1] == '*') {   /* block comment (nests) */
      int depth = 0;
      while (p < end) {
        if (*p == '/' && p + 1 < end && p[1] == '*') { depth++; p += 2; continue; }
        if (*p == '*' && p + 1 < end && p[1] == '/') {
          p += 2;
          if (--depth == 0) break;
          continue;
        }
        p++;
      }
    } else if (c == '$' && (p == sql || !ident_char(p[-1])) && dollar_tag(p, end)) {
      size_t tl = dollar_tag(p, end);
      const char *body = p + tl;
      const char *q = body;
      while (q < end && !(*q == '$' && (size_t)(end - q) >= tl && memcmp(q, p, tl) == 0)) q++;
      p = q < end ? q + tl : end;
    } else if (c == '?') {
      if (p + 1 < end && p[1] == '?') {
        ml_buf_addc(&out, '?');
        p += 2;
        continue;
      }
      ml_buf_addc(&out, '$');
      ml_buf_addu(&out, (unsigned long long)++n);
      p++;
      continue;
    } else if (c == ';') {
      semi = 1;
      p++;
    } else {   /* a run up to the next character that may start one of the above */
      do {
        if (semi && multi && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') *multi = 1;
        p++;
      } while (p < end && !may_start(*p));
    }
    ml_buf_add(&out, start, (size_t)(p - start));
  }
  ml_buf_addc(&out, '\0');
  *count = n;
  return out.data;
}

/* Skips blanks, comments and opening parentheses: the statement's first keyword. */
static const char *first_word(const char *p) {
  for (;;) {
    if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '(') {
      p++;
    } else if (p[0] == '-' && p[1] == '-') {
      while (*p && *p != '\n') p++;
    } else if (p[0] == '/' && p[1] == '*') {
      int depth = 0;
      while (*p) {
        if (p[0] == '/' && p[1] == '*') { depth++; p += 2; continue; }
        if (p[0] == '*' && p[1] == '/') {
          p += 2;
          if (--depth == 0) break;
          continue;
        }
        p++;
      }
    } else {
      return p;
    }
  }
}

static int word_in(const char *p, size_t n, const char *const *words, size_t count) {
  for (size_t i = 0; i < count; i++)
    if (strlen(words[i]) == n && strncasecmp(p, words[i], n) == 0) return 1;
  return 0;
}

int ml_db_pg_sql_pipelinable(const char *sql) {
  static const char *const safe[] = {"SELECT", "WITH", "VALUES", "TABLE", "INSERT", "UPDATE",
                                     "DELETE"};
  const char *p = first_word(sql);
  size_t n = 0;
  while (ident_char(p[n]) && p[n] != '$') n++;
  return word_in(p, n, safe, sizeof safe / sizeof *safe);
}

int ml_db_pg_sql_readonly(const char *sql) {
  static const char *const first[] = {"SELECT", "VALUES", "TABLE"};
  /* the words that may stand before a parenthesis: keywords, and functions that cannot
   * write nor lock */
  static const char *const paren[] = {
    "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "EXISTS", "ANY", "ALL", "SOME",
    "ON", "USING", "JOIN", "AS", "VALUES", "UNION", "INTERSECT", "EXCEPT", "OVER", "FILTER",
    "ROW", "ARRAY", "CAST", "BY", "LIMIT", "OFFSET", "HAVING", "IS", "THEN", "ELSE", "WHEN",
    "CASE", "BETWEEN", "LIKE", "ILIKE", "count", "sum", "min", "max", "avg", "coalesce",
    "nullif", "greatest", "least", "lower", "upper", "length", "abs", "round", "array_agg",
    "string_agg", "json_agg", "jsonb_agg", "json_build_object", "jsonb_build_object", "now"};
  static const char *const never[] = {"FOR", "INTO"};   /* row locks; SELECT INTO creates */
  const char *p = first_word(sql);
  size_t n = 0;
  while (ident_char(p[n]) && p[n] != '$') n++;
  if (!word_in(p, n, first, sizeof first / sizeof *first)) return 0;
  const char *end = sql + strlen(sql);
  p += n;
  while (p < end) {
    char c = *p;
    if (c == '\'') {   /* a plain literal says nothing (E'' with its escapes: not read) */
      if (p > sql && (p[-1] == 'e' || p[-1] == 'E')) return 0;
      for (p++; p < end; p++) {
        if (*p != '\'') continue;
        if (p + 1 < end && p[1] == '\'') p++;
        else break;
      }
      p++;
    } else if (c == '$') {   /* $n is a parameter; a dollar quote is not read here */
      if (p + 1 >= end || p[1] < '0' || p[1] > '9') return 0;
      for (p++; p < end && *p >= '0' && *p <= '9'; p++) {}
    } else if ((c == '-' && p[1] == '-') || (c == '/' && p[1] == '*')) {
      p = first_word(p);
    } else if (c >= '0' && c <= '9') {
      while (p < end && ident_char(*p) && *p != '$') p++;
    } else if (ident_char(c)) {
      n = 0;
      while (p + n < end && ident_char(p[n]) && p[n] != '$') n++;
      if (word_in(p, n, never, sizeof never / sizeof *never)) return 0;
      const char *q = p + n;
      while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')) q++;
      /* a call: only the listed words, unqualified (public.count could be anyone's) */
      if (q < end && *q == '(' &&
          ((p > sql && p[-1] == '.') || !word_in(p, n, paren, sizeof paren / sizeof *paren)))
        return 0;
      p += n;
    } else if (strchr(" \t\r\n,.()[]=<>+-*/:", c)) {
      p++;
    } else {   /* a quoted name (maybe a function's), `;`, an operator that may be anyone's */
      return 0;
    }
  }
  return 1;
}
