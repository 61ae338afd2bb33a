/* Lua states for moonlet: standard libraries, lua-cjson, the embedded moonlet modules, and
 * the C primitives as module "moonlet.core". */
#ifndef ML_LSTATE_H
#define ML_LSTATE_H
#include <lua.h>
#include <stddef.h>

typedef struct ml_preload_s ml_preload_t;

/* A new state. In sanitizer builds (ML_SANITIZE) Lua's heap comes from malloc so ASan
 * watches it. `appdir` (may be NULL) goes first on package.path; the embedder's modules in
 * `preload` (may be NULL) go into package.preload. NULL on out of memory. */
lua_State *ml_lua_new(const char *appdir, const ml_preload_t *preload);

/* Runs APPDIR/app.lua and leaves the app it returns on the stack. Returns 0, or -1 with a
 * one-line message (file:line for syntax and runtime errors) in err. */
int ml_lua_load_app(lua_State *L, const char *appdir, char *err, size_t errlen);

/* Pushes the traceback-adding message handler used with lua_pcall. */
int ml_lua_traceback(lua_State *L);
#endif
