/* The "moonlet.core" module: the C functions the Lua side (lua/moonlet) builds on; each
 * file installs its own (ml_<file>_open). Names follow the Lua API they serve: a bare name
 * for a `moonlet.x` function (sleep, gather, run_in_pool), `<module>_<name>` for
 * `moonlet.<module>.<name>` (http_request, shared_dict, db_sqlite_open) and for the
 * request's lazy fields (req_url, req_headers). Handlers use them through `moonlet`. */
#ifndef ML_CORE_H
#define ML_CORE_H
#include <lua.h>

/* lua_CFunction for package.preload["moonlet.core"]: returns the module table. */
int ml_core_open(lua_State *L);
#endif
