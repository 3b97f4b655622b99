#!/usr/bin/env bash
# Install the TLS peers the interop tests talk to (tests/test_interop_*.py).
# Idempotent: installs from Debian only what is missing (gnutls-bin, openssl, nodejs, curl,
# nginx-light: a reverse proxy that resumes TLS sessions to its upstream).
set -euo pipefail

missing=()
command -v gnutls-cli >/dev/null 2>&1 && command -v gnutls-serv >/dev/null 2>&1 || missing+=(gnutls-bin)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
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
