#!/bin/sh
# Installs the Debian packages moonlet builds, tests and benchmarks with.
# Only what is missing is installed; apt-get update runs first when anything is.
# Usage: scripts/deps.sh [build|test|bench]   (each level includes the ones before)
set -e
level=${1:-test}

pkgs="build-essential pkg-config libluajit-5.1-dev libuv1-dev node-llhttp lua-cjson-dev
      libsqlite3-dev libpq-dev libssl-dev zlib1g-dev"
case $level in
  test|bench) pkgs="$pkgs curl openssl procps postgresql" ;;
esac
case $level in
  bench) pkgs="$pkgs wrk nginx-light" ;;
esac

missing=""
for p in $pkgs; do
  # dpkg-query prints "install ok installed" only for a fully installed package
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing="$missing $p"
  fi
done
# OpenResty's LuaJIT conflicts with Debian's; either provides luajit.pc.
case " $missing " in
  *" libluajit-5.1-dev "*)
    if dpkg-query -W -f='${Status}' libluajit2-5.1-dev 2>/dev/null | grep -q "ok installed"; then
      missing=$(echo "$missing" | sed 's/ libluajit-5.1-dev//')
    fi ;;
esac
[ -z "$missing" ] && exit 0

echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
