#!/usr/bin/env bash
# Installs everything rconv and its tests need on a Debian machine (run as root or with sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # erofs-utils: independent EROFS reader; docker-registry: the CNCF distribution registry;
  # skopeo/umoci: independent image tools for interop tests; attr: getfattr for kernel checks.
  $SUDO apt-get install -y -qq --no-install-recommends \
    erofs-utils docker-registry skopeo umoci attr openssl ca-certificates curl >/dev/null
fi
python3 -m pip install -q --disable-pip-version-check -e '.[test]'
