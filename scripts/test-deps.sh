#!/bin/sh
# Installs the Redis tools keyval's integration tests talk to keyval with
# (docs/testing.md), from Debian packages, when one is missing:
#
#   redis-tools                redis-cli and redis-benchmark
#   python3-redis              redis-py, for the client-library tests
#   nutcracker                 twemproxy, for the sharding test
#   prometheus-redis-exporter  the exporter, which scrapes keyval's INFO
#
# Idempotent and silent when everything is there. Otherwise it says what
# it installs and why, runs `apt-get install -y --no-install-recommends`
# as root or through sudo, and checks the tools are there afterwards.
# Exits non-zero, saying why, when it cannot. `make test` runs it first.
#
# The tests look the tools up the same way (tests/common/redis.rs): a
# missing tool fails them with a message naming this script.

set -u

me="scripts/test-deps.sh"
missing=""
reasons=""

# Whether a program is on PATH or in a sbin directory (nutcracker lives in
# /usr/sbin, which a non-root PATH may lack).
have() {
    command -v "$1" >/dev/null 2>&1 && return 0
    for dir in /usr/sbin /sbin /usr/local/sbin; do
        [ -x "$dir/$1" ] && return 0
    done
    return 1
}

# Whether a python3 that imports redis-py exists: the one on PATH, or the
# system's (Debian installs python3-redis for /usr/bin/python3).
have_redis_py() {
    for py in python3 /usr/bin/python3; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import redis' >/dev/null 2>&1; then
            return 0
        fi
    done
    return 1
}

need() {
    case " $missing " in
        *" $1 "*) ;;
        *) missing="$missing $1" ;;
    esac
    reasons="$reasons
  $1: $2"
}

have redis-cli || need redis-tools "redis-cli is missing (the redis-cli tests)"
have redis-benchmark || need redis-tools "redis-benchmark is missing (the benchmark test)"
have_redis_py || need python3-redis "no python3 imports redis (the redis-py tests)"
have nutcracker || need nutcracker "nutcracker is missing (the twemproxy test)"
have prometheus-redis-exporter ||
    need prometheus-redis-exporter "prometheus-redis-exporter is missing (the exporter test)"

[ -z "$missing" ] && exit 0

echo "$me: installing$missing, because:$reasons"

if ! command -v apt-get >/dev/null 2>&1; then
    echo "$me: apt-get not found: install the equivalent of$missing by hand" >&2
    exit 1
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=""
elif command -v sudo >/dev/null 2>&1; then
    as_root="sudo"
else
    echo "$me: not root and no sudo: run it as root to install$missing" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086 # $missing and $as_root are word lists.
if ! $as_root apt-get install -y --no-install-recommends $missing; then
    # The package lists may be stale or absent (a fresh container).
    echo "$me: apt-get install failed; updating the package lists and trying again"
    if ! $as_root apt-get update ||
        ! $as_root apt-get install -y --no-install-recommends $missing; then
        echo "$me: could not install$missing" >&2
        exit 1
    fi
fi

still=""
have redis-cli || still="$still redis-cli"
have redis-benchmark || still="$still redis-benchmark"
have_redis_py || still="$still redis-py"
have nutcracker || still="$still nutcracker"
have prometheus-redis-exporter || still="$still prometheus-redis-exporter"
if [ -n "$still" ]; then
    echo "$me: installed$missing, but still missing:$still" >&2
    exit 1
fi
echo "$me: installed$missing"
