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

int ml_db_pg_sql_pipelinable(const char *sql) {
  static const char *const safe[] = {"SELECT", "WITH", "VALUES", "TABLE", "INSERT", "UPDATE",
                                     "DELETE"};
  const char *p = sql;
  for (;;) {   /* blanks, comments, parentheses */
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
      break;
    }
  }
  size_t n = 0;
  while (ident_char(p[n]) && p[n] != '$') n++;
  for (size_t i = 0; i < sizeof safe / sizeof *safe; i++)
    if (strlen(safe[i]) == n && strncasecmp(p, safe[i], n) == 0) return 1;
  return 0;
}
