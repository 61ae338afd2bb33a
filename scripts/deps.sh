#!/bin/sh
# Installs the Debian packages moonlet builds, tests and benchmarks with.
# Only what is missing is installed; apt-get update runs first when anything is.
# Not root: apt-get runs through sudo (it asks for your password).
# Usage: scripts/deps.sh [build|test|bench]   (each level includes the ones before)
set -e
level=${1:-test}

# build: the compiler, the libraries moonlet links, and curl for the README's examples.
pkgs="build-essential pkg-config libluajit-5.1-dev libuv1-dev node-llhttp lua-cjson-dev
      libsqlite3-dev libpq-dev libssl-dev zlib1g-dev libwslay-dev curl"
# test: busted runs the specs (`moonlet test`); openssl, procps and PostgreSQL are peers;
# python3-websockets is the WebSocket client the specs talk to.
case $level in
  test|bench) pkgs="$pkgs lua-busted openssl procps postgresql-common postgresql
                    python3-websockets" ;;
esac
case $level in
  bench) pkgs="$pkgs wrk nginx-light" ;;
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
[ -z "$missing" ] && exit 0

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
