#!/usr/bin/env bash
# Installs what building SMILE needs beyond Go: OpenBLAS headers and library
# (Debian libopenblas-dev) for the default CPU backend. Idempotent; quiet when
# everything is already there.
#
#   scripts/deps.sh         what `make build` needs
#   scripts/deps.sh proto   protoc, only for `make proto` (the generated code
#                           is committed, so building never needs it)
set -euo pipefail

need=()
if [ "${1:-}" = proto ]; then
  command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
else
  if ! [ -e /usr/include/x86_64-linux-gnu/cblas.h ] && ! [ -e /usr/include/cblas.h ] &&
     ! [ -e /usr/include/openblas/cblas.h ]; then
    need+=(libopenblas-dev)
  fi
  command -v npm >/dev/null 2>&1 || need+=(npm)
  # Without a C compiler Go silently turns cgo off and builds the slow pure-Go
  # backend; the Makefile checks the result, this makes sure it can succeed.
  command -v gcc >/dev/null 2>&1 || need+=(gcc libc6-dev)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "deps: need root (or sudo) to install: ${need[*]}" >&2; exit 1
  fi
fi
echo "deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
