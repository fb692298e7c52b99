#!/usr/bin/env bash
# Proves that a fresh clone sets up and runs on the distribution's own Python (Debian 12:
# /usr/bin/python3, which refuses `pip install` outside a venv, PEP 668), whatever other Python
# comes first on this machine's PATH: clone the committed HEAD into a temporary directory and,
# with an environment emptied down to PATH=system directories and HOME (pip's user config),
# run scripts/setup.sh there, check that .venv was made by /usr/bin/python3, then the demo
# (the README's first command) and lint + types + unit tests (scripts/test.sh -m "not
# integration"; the whole suite is the README's second command, which CI runs on its own).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/rconv-syspy.XXXXXX")
trap 'rm -rf "$work"' EXIT
git clone -q "$root" "$work/rconv"
# The tests read the upstream fixtures from ../shared beside the checkout, when there is one.
if [ -d "$root/../shared" ]; then
  ln -s "$(cd "$root/../shared" && pwd)" "$work/shared"
fi
cd "$work/rconv"
clean=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$HOME")
"${clean[@]}" bash scripts/setup.sh
home=$(sed -n 's/^home *= *//p' .venv/pyvenv.cfg)
if [ "$home" != /usr/bin ] && [ "$home" != /bin ]; then
  echo "check_system_python.sh: .venv was made by the Python in $home, not /usr/bin/python3" >&2
  exit 1
fi
echo ".venv made by $home/python3: Python $(.venv/bin/python -c 'import platform; print(platform.python_version())')"
"${clean[@]}" .venv/bin/rconv --version
"${clean[@]}" bash scripts/demo.sh
"${clean[@]}" bash scripts/test.sh -m "not integration" -x
