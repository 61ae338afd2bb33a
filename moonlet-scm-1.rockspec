-- moonlet as a LuaRocks package. From a checkout (Debian: apt-get install luarocks, and the
-- build packages of scripts/deps.sh):
--   luarocks --lua-version=5.1 --tree DIR make LUA_INCDIR=/usr/include/luajit-2.1
-- installs DIR/bin/moonlet and the Lua side as files in DIR/share/lua/5.1/moonlet (README
-- "Install"). The C is compiled against LuaJIT's headers, found as LUAJIT below (luarocks'
-- own LUA_INCDIR is plain Lua 5.1's unless told otherwise; the Makefile refuses that one).
rockspec_format = "3.0"
package = "moonlet"
version = "scm-1"
source = {
  -- not published yet: `luarocks make` builds the checkout it runs in and fetches nothing
  url = "git+https://example.invalid/moonlet.git",
}
description = {
  summary = "An HTTP server in C (libuv, llhttp, LuaJIT) with FastAPI's model for Lua apps",
  detailed = [[
Routes written in Lua run as coroutines on a libuv event loop, or on a pool of threads with
Lua states of their own; validation, dependencies, middleware, OpenAPI, WebSocket, SSE, an
HTTP client, SQLite and PostgreSQL, Redis with pub/sub, hot reload. The rock installs the `moonlet` binary and
its Lua modules with LuaLS annotations (point LuaLS's workspace.library at share/lua/5.1).
]],
  homepage = "https://example.invalid/moonlet",
  license = "unpublished",
}
-- LuaJIT is Lua 5.1 to LuaRocks; the binary embeds its own LuaJIT state and needs no rock.
dependencies = {
  "lua ~> 5.1",
}
-- Debian packages (scripts/deps.sh build): libluajit-5.1-dev, libuv1-dev, libssl-dev,
-- libsqlite3-dev, libpq-dev, libwslay-dev, libhiredis-dev, zlib1g-dev, node-llhttp,
-- lua-cjson-dev.
external_dependencies = {
  LUAJIT = { header = "luajit-2.1/luajit.h" },
  LIBUV = { header = "uv.h" },
  OPENSSL = { header = "openssl/ssl.h" },
  SQLITE = { header = "sqlite3.h" },
  PQ = { header = "postgresql/libpq-fe.h" },
  WSLAY = { header = "wslay/wslay.h" },
  HIREDIS = { header = "hiredis/async.h" },
  ZLIB = { header = "zlib.h" },
}
build = {
  type = "make",
  build_target = "bin",
  build_variables = {
    LUA_INCDIR = "$(LUAJIT_INCDIR)/luajit-2.1",
  },
  install_target = "install-rock",
  install_variables = {
    LUA_INCDIR = "$(LUAJIT_INCDIR)/luajit-2.1",
    BINDIR = "$(BINDIR)",
    LUADIR = "$(LUADIR)",
  },
}
