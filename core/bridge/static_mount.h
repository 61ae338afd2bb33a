/* app:static's C side: core.static_dir checks a mount's directory when app.lua calls
 * app:static, and ml_static_mount_from turns a mount's route entry (runtime.routes) into the
 * ml_static_t the route serves (http/static.h). */
#ifndef ML_STATIC_MOUNT_H
#define ML_STATIC_MOUNT_H
#include "static.h"
#include <lua.h>

/* The mount the route entry at idx describes (fields static_root, prefix_len, index,
 * max_age), or NULL for a Lua route. The caller frees it (ml_static_free). */
ml_static_t *ml_static_mount_from(lua_State *L, int idx);
#endif
