#!/usr/bin/env bash
# The prepared GPU check in one command (see benchmarks/README.md, "The GPU check").
#
#   bash benchmarks/gpu_check.sh --fetch-wheels   # once, on a machine that reaches PyPI:
#                                                 # the project's pure-data dependencies that the
#                                                 # GPU image lacks, as wheels in .whl/ (git-ignored)
#   bash benchmarks/gpu_check.sh [ARGS...]        # on the GPU machine: install .whl/ if present,
#                                                 # then run benchmarks/gpu_check.py ARGS
#
# Results go to $OUT/gpu_check (or ./gpu_check_out when OUT is unset): results.json,
# report.md and log.txt. Runs with the machine's own python3 and torch; needs no network.
set -euo pipefail
cd "$(dirname "$0")/.."

# The GPU image (python 3.12, torch, numpy, pandas, scipy, scikit-learn, matplotlib, fsspec,
# pyyaml, toolz, cloudpickle...) lacks these; versions are the project's pins (pyproject.toml)
# or, for indirect dependencies, those of the project's own environment.
WHEELS="zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 cdflib==1.3.16
        dask==2026.8.0 partd==1.4.2 locket==1.0.0 pypng==0.20220715.0 xarray==2026.9.0 fsspec==2026.9.0"

if [ "${1:-}" = "--fetch-wheels" ]; then
    PY=${PYTHON:-python3}
    mkdir -p .whl
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    platforms=""
    for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
               manylinux2014_x86_64 manylinux1_x86_64; do
        platforms="$platforms --platform $tag"
    done
    for spec in $WHEELS; do
        # shellcheck disable=SC2086
        "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            $platforms -d .whl "$spec"
    done
    ls -l .whl
    exit 0
fi

PY=${PYTHON:-python3}
RESULTS="${OUT:-gpu_check_out}/gpu_check"
mkdir -p "$RESULTS"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/aurora-site .whl/*.whl
    export PYTHONPATH="/tmp/aurora-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1
set -o pipefail
"$PY" benchmarks/gpu_check.py --out "$RESULTS" "$@" 2>&1 | tee "$RESULTS/log.txt"
