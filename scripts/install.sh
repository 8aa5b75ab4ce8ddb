#!/usr/bin/env bash
# Install the project and its pinned dependencies into the current Python, in one resolver
# pass (kfp pins kubernetes, protobuf and requests/urllib3 exactly). EXTRAS=test adds the
# test tools. Skips the work when everything is already importable at the pinned versions.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${EXTRAS:-}"
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
if python - "$extras" <<'PY' 2>/dev/null; then
import sys, importlib.metadata as md, tomllib
pins = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = list(pins["dependencies"]) + (list(pins["optional-dependencies"].get(sys.argv[1], [])) if sys.argv[1] else [])
for r in reqs:
    name, _, version = r.partition("==")
    name = name.split("[")[0]
    assert md.version(name).split("+")[0] == version, r
md.version("rest-kubeflow")
PY
  echo "install: pinned dependencies already present"
else
  python -m pip install --disable-pip-version-check -q -e "$spec"
fi
