#!/usr/bin/env bash
# Packaging check (CI runs it after scripts/setup.sh): build the sdist and, from it, the wheel
# with `python -m build`; `twine check` them; check what they contain; install the wheel (not
# editable) into a fresh venv and, from a directory outside the checkout so that the checkout's
# packages cannot shadow the installed ones, run that rconv: --version, --help, and a
# conversion of the sample image that `rconv check` then verifies.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
py="$root/.venv/bin/python"
if [ ! -x "$py" ]; then
  echo "check_wheel.sh: no .venv; run first: bash scripts/setup.sh" >&2
  exit 1
fi
unset PYTHONPATH
work=$(mktemp -d "${TMPDIR:-/tmp}/rconv-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$py" -m build --outdir "$work/dist" "$root" >"$work/build.log" 2>&1 || {
  cat "$work/build.log" >&2
  exit 1
}
"$py" -m twine check --strict "$work/dist"/*

# Contents: the wheel holds every package of the checkout (each directory with an __init__.py
# under rafs/, registry/, convert/), their modules, the license and the entry point; the sdist
# holds README, LICENSE, pyproject.toml and the same modules, and no tests.
"$py" - "$root" "$work/dist" <<'PY'
import sys
import tarfile
import zipfile
from pathlib import Path

root, dist = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = dist.glob("rconv-*.whl")
(sdist,) = dist.glob("rconv-*.tar.gz")
modules = {
    p.relative_to(root).as_posix()
    for top in ("rafs", "registry", "convert")
    for p in (root / top).rglob("*.py")
    if "__pycache__" not in p.parts and (p.parent / "__init__.py").exists()
}
names = set(zipfile.ZipFile(wheel).namelist())
info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
problems = [f"wheel lacks {m}" for m in sorted(modules - names)]
problems += [f"wheel lacks {info}/{n}" for n in ("licenses/LICENSE", "entry_points.txt")
             if f"{info}/{n}" not in names]
problems += [f"wheel has {n}" for n in sorted(names) if n.split("/")[0] in ("tests", "testdata")]
with tarfile.open(sdist) as tar:
    inside = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
wanted = {"README.md", "LICENSE", "pyproject.toml"} | modules
problems += [f"sdist lacks {n}" for n in sorted(wanted - inside)]
problems += [f"sdist has {n}" for n in sorted(inside) if n.split("/")[0] in ("tests", "testdata")]
print("\n".join(problems) or f"{wheel.name}: {len(modules)} modules; {sdist.name}: {len(inside)} files")
sys.exit(1 if problems else 0)
PY

"$py" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check "$work/dist"/rconv-*.whl
cd "$work"
rconv="$work/venv/bin/rconv"
"$work/venv/bin/python" - "$work/venv" <<'PY'
import sys
import convert, rafs, registry  # noqa: E401

for module in (convert, rafs, registry):
    assert module.__file__.startswith(sys.argv[1] + "/"), f"{module.__name__} from {module.__file__}"
PY
"$rconv" --version
"$rconv" --help >/dev/null
"$py" "$root/testdata/make_sample.py" --oci "$work/sample" >/dev/null
"$rconv" convert --source "oci:$work/sample:1" --target "oci:$work/out:n"
"$rconv" check --target "oci:$work/out:n" --source "oci:$work/sample:1"
