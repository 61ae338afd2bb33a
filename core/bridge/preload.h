/* The embedder's C modules (ml_host_preload): a list of (name, open) the host keeps and
 * every Lua state it makes installs into package.preload, with the embedder's user pointer.
 * Ownership: the host owns the list; states copy what they need (the name, the function
 * pointer, the user pointer) when they are made, so a state never points into the list.
 * Threading: the list is written before the app loads (ml_host_load) and only read after,
 * by the loop and by every pool thread as it makes its state: no lock. */
#ifndef ML_PRELOAD_H
#define ML_PRELOAD_H
#include <lua.h>

typedef struct ml_preload_s ml_preload_t;

ml_preload_t *ml_preload_new(void);
void ml_preload_free(ml_preload_t *p);
/* Adds (or replaces) module `name`. Returns 0, or -1 for a name moonlet's own modules use
 * ("moonlet", "moonlet.*", "cjson") or an empty one. */
int ml_preload_add(ml_preload_t *p, const char *name, lua_CFunction open);
/* Adds (or replaces) module `name` seen through the FFI (ml_host_preload_ffi): cdef and
 * ctype are copied, api is kept. -1 as ml_preload_add, or for a NULL argument. */
int ml_preload_add_ffi(ml_preload_t *p, const char *name, const char *cdef, const char *ctype,
                       const void *api);
void ml_preload_set_userdata(ml_preload_t *p, void *userdata);
void *ml_preload_userdata(const ml_preload_t *p);
/* Into the new state L (p may be NULL: nothing to add): package.preload[name] for each
 * module, a closure of its open function whose upvalue 1 is the user pointer (an FFI
 * module: a loader that declares its cdef once per state and casts its api), and the
 * user pointer in the registry (ml_lua_userdata). */
void ml_preload_install(const ml_preload_t *p, lua_State *L);
#endif
