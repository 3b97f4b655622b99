#!/usr/bin/env bash
# Install the TLS peers the interop tests talk to (tests/test_interop_*.py).
# Idempotent: installs from Debian only what is missing (gnutls-bin, openssl, nodejs, curl,
# chromium for the headless-browser test of aiotls.aiohttp, nginx-light: a reverse proxy that
# resumes TLS sessions to its upstream, redis-server for an example, gcc and libgnutls28-dev
# for the benchmarks' load client).
set -euo pipefail

missing=()
command -v gnutls-cli >/dev/null 2>&1 && command -v gnutls-serv >/dev/null 2>&1 || missing+=(gnutls-bin)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)

# Redis for examples/redis_sessions.py (tests/test_examples.py starts and stops its own server).
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)

# The benchmarks' C load client (tests/test_benchmarks.py builds it): a compiler and GnuTLS.
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists gnutls 2>/dev/null || missing+=(libgnutls28-dev)

if [ ${#missing[@]} -eq 0 ]; then
    echo "peers present: $(gnutls-cli --version | head -n 1); $(openssl version); node $(node --version)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
gnutls-cli --version | head -n 1
