#!/usr/bin/env bash
# Installs everything rconv and its tests need on a Debian machine (run as root or with sudo):
# the system packages, then rconv itself (editable, with the test tools) into the project's
# virtual environment .venv. A venv because Debian 12 / Ubuntu 24.04 refuse `pip install` into
# the system Python (PEP 668, externally-managed-environment). The other scripts run inside it.
# The venv is made by $PYTHON if set, else by python3; either must be Python >= 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
if command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # erofs-utils: independent EROFS reader; docker-registry: the CNCF distribution registry;
  # skopeo/umoci: independent image tools for interop tests; attr: getfattr for kernel checks;
  # pigz: a second gzip writer for the --oci-ref (zran) tests; redis-server: the broker of
  # the service tests (rconv serve --broker redis://…); python3-venv: venv + ensurepip, which
  # Debian ships apart from python3.
  $SUDO apt-get install -y -qq --no-install-recommends \
    erofs-utils docker-registry redis-server skopeo umoci attr openssl ca-certificates curl pigz \
    python3 python3-venv >/dev/null
fi

python=${PYTHON:-python3}
if ! command -v "$python" >/dev/null; then
  echo "setup.sh: $python not found; rconv needs Python >= 3.11" >&2
  exit 1
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup.sh: $(command -v "$python") is Python $("$python" -c 'import platform; print(platform.python_version())');" \
    "rconv needs Python >= 3.11 (set PYTHON=/path/to/python3.11 or newer)" >&2
  exit 1
fi

# A .venv that cannot run pip (its Python was removed, or an earlier venv creation failed
# without ensurepip) is made again.
if [ -e .venv ] && ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
  echo "setup.sh: .venv is broken; creating it again" >&2
  rm -rf .venv
fi
if [ ! -e .venv ]; then
  if ! "$python" -m venv .venv; then
    rm -rf .venv
    echo "setup.sh: '$python -m venv' failed; on Debian/Ubuntu install python3-venv" >&2
    exit 1
  fi
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,serve]'
# Byte-compiled as a regular install is: an editable install leaves the sources, and where
# PYTHONDONTWRITEBYTECODE is set each command would compile rconv again (~60 ms).
.venv/bin/python -m compileall -q convert rafs registry >/dev/null
