#!/usr/bin/env bash
# Download the wheels of benchmarks/gpu_requirements.txt for the GPU machine (CPython 3.12, x86_64,
# no internet) into .whl/ (ignored by git), building the two that PyPI has only as pure-Python sources.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
source_only="antlr4-python3-runtime connection-pool"
platforms=()
for tag in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$tag")
done
grep -v '^#' benchmarks/gpu_requirements.txt | while read -r spec; do
    if [[ " $source_only " == *" ${spec%%==*} "* ]]; then
        python3 -m pip wheel -q --no-deps -w .whl "$spec"
    else
        python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            "${platforms[@]}" -d .whl "$spec"
    fi
done
du -sh .whl
