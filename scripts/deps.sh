#!/bin/sh
# Installs the Debian packages moonlet builds, tests and benchmarks with.
# Only what is missing is installed; apt-get update runs first when anything is.
# Not root: apt-get runs through sudo (it asks for your password).
# Usage: scripts/deps.sh [build|test|bench|stress]   (each level includes the ones before)
set -e
level=${1:-test}

# build: the compiler, the libraries moonlet links (hiredis: moonlet.redis), curl for the
# README's examples, and media-types (/etc/mime.types, the static files' Content-Type).
pkgs="build-essential pkg-config libluajit-5.1-dev libuv1-dev node-llhttp lua-cjson-dev
      libsqlite3-dev libpq-dev libssl-dev zlib1g-dev libwslay-dev libhiredis-dev curl media-types"
# test: busted runs the specs (`moonlet test`); openssl, procps, PostgreSQL, python3 (its
# gzip reads what the gzip middleware wrote), python3-websockets (the WebSocket client the
# specs talk to), node with npm's eventsource (an EventSource client) and chromium (the
# chat page in a real browser) are peers; luarocks installs the rockspec (install_spec);
# clang (with its sanitizer and libFuzzer runtimes, libclang-rt-14-dev: not pulled in by
# clang itself) builds the libFuzzer targets (fuzz/, make fuzz; make test replays them);
# wrk is the load under which workers_spec.lua reloads --workers with SIGHUP; prometheus
# ships promtool, which checks what /metrics serves (metrics_spec; the server itself is not
# started: no recommends, and the specs never run it); redis-server (with redis-cli) is the
# throwaway server of redis_spec and multihost_spec (tests/support/redis.lua starts it on a
# free port); nginx-light is the load balancer in front of two hosts in multihost_spec
# (and the speed ceiling in bench).
case $level in
  test|bench|stress) pkgs="$pkgs lua-busted openssl procps postgresql-common postgresql python3
                    python3-websockets nodejs chromium luarocks lua5.1 clang libclang-rt-14-dev
                    wrk prometheus redis-server nginx-light"
    # a nodejs that bundles npm (NodeSource's) conflicts with Debian's npm package
    command -v npm >/dev/null 2>&1 || pkgs="$pkgs npm" ;;
esac
# bench: FastAPI, uvicorn and redis-py (redis.asyncio) are the Python side of the redis
# section (Debian's python3; redis-benchmark comes with redis-server, and nginx, the speed
# ceiling, with nginx-light: test dependencies); FastAPI with asyncpg is a peer of the peers
# sections (bench/peers.sh), with nginx's Lua module (nginx_lua_deps below) and Node.
# Celery (with redis-py) is moonlet.jobs' peer in the jobs section (bench/apps/celery_noop.py).
case $level in
  bench|stress) pkgs="$pkgs python3-fastapi python3-uvicorn python3-redis python3-asyncpg
                      python3-celery" ;;
esac
# stress: the sqlite3 shell checks the database a kill -9 left (stress/run.sh)
case $level in
  stress) pkgs="$pkgs sqlite3" ;;
esac

installed() {   # dpkg-query prints "install ok installed" only for a fully installed package
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"
}

missing=""
for p in $pkgs; do
  installed "$p" || missing="$missing $p"
done
# OpenResty's LuaJIT conflicts with Debian's; either provides luajit.pc.
case " $missing " in
  *" libluajit-5.1-dev "*)
    if installed libluajit2-5.1-dev; then
      missing=$(echo "$missing" | sed 's/ libluajit-5.1-dev//')
    fi ;;
esac
# test: npm packages the specs' clients use (eventsource: a real SSE client; puppeteer-core:
# drives Debian's chromium; @seriousme/openapi-schema-validator and ajv: check /openapi.json
# against the OpenAPI 3.1 and JSON Schema 2020-12 specifications), from the npm registry into
# build/node (specs run node with NODE_PATH=build/node/node_modules). puppeteer-core
# downloads no browser. bench: pg too (Node's PostgreSQL client, bench/peers.sh's peers_pg);
# one npm install for all of them (a second one would prune what the first installed).
npm_deps() {
  case $level in test|bench|stress) ;; *) return 0 ;; esac
  dir=$(dirname "$0")/../build/node
  bench_npm=""
  case $level in bench|stress) bench_npm="pg@8" ;; esac
  [ -f "$dir/node_modules/eventsource/package.json" ] &&
    [ -f "$dir/node_modules/puppeteer-core/package.json" ] &&
    [ -f "$dir/node_modules/@seriousme/openapi-schema-validator/package.json" ] &&
    [ -f "$dir/node_modules/ajv/package.json" ] &&
    { [ -z "$bench_npm" ] || [ -f "$dir/node_modules/pg/package.json" ]; } && return 0
  echo "deps: npm install eventsource puppeteer-core openapi-schema-validator ajv $bench_npm into build/node"
  mkdir -p "$dir"
  # node trusts its own CA list only: add the system's (a TLS-inspecting proxy's CA is there)
  if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
  fi
  npm install --prefix "$dir" --no-save --no-audit --no-fund eventsource@2 puppeteer-core@24 \
    @seriousme/openapi-schema-validator@2 ajv@8 $bench_npm
}

# bench: nginx's Lua module (Debian's libnginx-mod-http-lua, lua-nginx-module 0.10) is a
# peer of bench/peers.sh. Installing it would swap Debian's LuaJIT, which moonlet builds
# with (libluajit-5.1-dev), for OpenResty's (lua-resty-core depends on libluajit2-5.1-2, which
# conflicts with it): so unless it is installed already, its .debs (with OpenResty's LuaJIT)
# are fetched with apt-get download and unpacked into build/peers/nginx-lua, and the bench
# runs nginx with LD_LIBRARY_PATH pointing there. Nothing outside build/ changes.
nginx_lua_deps() {
  case $level in bench|stress) ;; *) return 0 ;; esac
  [ -f /usr/share/nginx/modules/ngx_http_lua_module.so ] ||
    [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] && return 0
  root=$(cd "$(dirname "$0")/.." && pwd)/build/peers
  [ -f "$root/nginx-lua/usr/lib/nginx/modules/ngx_http_lua_module.so" ] && return 0
  echo "deps: apt-get download libnginx-mod-http-lua (and its Lua libraries) into build/peers/nginx-lua"
  mkdir -p "$root/debs" "$root/nginx-lua"
  (cd "$root/debs" && apt-get download libnginx-mod-http-lua libnginx-mod-http-ndk \
    lua-resty-core lua-resty-lrucache libluajit2-5.1-2)
  for deb in "$root"/debs/*.deb; do dpkg-deb -x "$deb" "$root/nginx-lua"; done
}

[ -z "$missing" ] && { npm_deps; nginx_lua_deps; exit 0; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
  echo "deps: not root, running apt-get through sudo"
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q

apt_install() {
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q --no-install-recommends "$@"
}

# The suite starts its own throwaway PostgreSQL server. Debian's postgresql package would
# also create and start a system cluster on port 5432 that nothing here uses: install
# postgresql-common first and tell it not to create one.
case " $missing " in
  *" postgresql "*)
    apt_install postgresql-common
    conf=/etc/postgresql-common/createcluster.conf
    if ! grep -q '^create_main_cluster' "$conf"; then
      echo "create_main_cluster = false" | $SUDO tee -a "$conf" >/dev/null
    fi ;;
esac
# shellcheck disable=SC2086
apt_install $missing
npm_deps
nginx_lua_deps
