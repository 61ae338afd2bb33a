/* The Lua side of moonlet (lua/moonlet), compiled into the binary by tools/embedgen. */
#ifndef ML_LUA_EMBED_H
#define ML_LUA_EMBED_H
#include <stddef.h>

typedef struct {
  const char *module;   /* "moonlet.app" */
  const char *chunk;    /* "@lua/moonlet/app.lua", for tracebacks */
  const char *src;      /* LuaJIT bytecode (tools/embedgen.c) */
  size_t len;
} ml_embedded_t;

extern const ml_embedded_t ml_embedded[];   /* ends with module == NULL */
#endif
