#!/usr/bin/env bash
# Builds fastrnn._core with AddressSanitizer + UBSan (CMake option
# FASTRNN_SANITIZE) into its own virtual environment and build directory,
# then runs the tests of the compiled code under it (every cell's kernels,
# packed batches included, their argument checks, the classifier head and
# the fused Adam update). Any memory error or undefined
# behaviour aborts the run.
#
#   scripts/sanitize.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
python=${PYTHON:-python3}
venv="$repo/build/sanitize-venv"

if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet numpy threadpoolctl pytest hypothesis scikit-build-core pybind11
"$venv/bin/python" -m pip install --quiet --no-build-isolation --no-deps \
  -Ccmake.define.FASTRNN_SANITIZE=ON -Cbuild-dir=build/sanitize "$repo"

# CPython is not built with ASan, so the runtime must be loaded first, and its
# deliberate never-freed allocations are not leaks worth reporting. libstdc++
# is preloaded too: ASan looks up the real __cxa_throw when it starts, and
# without it the first C++ exception (every argument check) aborts.
libasan=$(${CXX:-c++} -print-file-name=libasan.so)
libstdcxx=$(${CXX:-c++} -print-file-name=libstdc++.so)
export LD_PRELOAD="$libasan $libstdcxx"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
cd "$repo/build"  # not the source tree: import the installed, sanitized package
"$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir="$repo" -c "$repo/pyproject.toml" \
  "$repo"/tests/kernels/test_{core,kernels,kernel_arguments,gru_kernels,packed_kernels}.py \
  "$repo"/tests/kernels/test_{classifier_head,adam_fused}.py "$@"
