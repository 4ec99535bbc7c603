#!/usr/bin/env bash
# The native core's API is written once, in sse_fast/_core/<name>_ext.pyi for each name of
# NATIVE_MODULES (sse_fast/_core/native.py, read below), and mypy.stubtest checks both
# implementations against it: the compiled modules, then the pure-Python twins
# (sse_fast/_core/<name>_py.py) against a copy of the same stubs. A name, a
# signature, a read-only attribute or __all__ that drifts on either side fails here
# (non-zero exit). tests/core/test_parity.py checks the behaviour stubs cannot express.
# Needs the extension built (pip install -e .) and mypy (the lint extra).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
modules=$(python -c 'from sse_fast._core.native import NATIVE_MODULES; print(*NATIVE_MODULES)')
compiled=() twins=()
for module in $modules; do
    compiled+=("sse_fast._core.${module}_ext")
    twins+=("sse_fast._core.${module}_py")
done

python -m mypy.stubtest "${compiled[@]}" --allowlist .ci/stubtest-allowlist.txt

# The twins: the same stubs, as sse_fast._core.*_py, found through MYPYPATH; stubtest runs
# from an empty directory so that mypy reads the stub copies, not the .py files, as the
# API (no PYTHONPATH either: mypy would read the .py files through it). The runtime
# side is the installed package, which must be this checkout (pip install -e .).
# @disjoint_base is dropped: the twins' classes declare __slots__, which stubtest
# takes as the same promise. A stub that names another native module's class (topic's
# Ring) names that module's twin in the copy.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/stubs/sse_fast/_core" "$work/empty"
: > "$work/stubs/sse_fast/__init__.pyi"
: > "$work/stubs/sse_fast/_core/__init__.pyi"
cp sse_fast/_core/errors.py "$work/stubs/sse_fast/_core/errors.pyi"
cp sse_fast/_core/request.py "$work/stubs/sse_fast/_core/request.pyi"
for module in $modules; do
    grep -v '^@disjoint_base' "sse_fast/_core/${module}_ext.pyi" |
        sed -E 's/(sse_fast\._core\.[a-z]+)_ext /\1_py /' > "$work/stubs/sse_fast/_core/${module}_py.pyi"
done
cd "$work/empty"
installed=$(python -c "import sse_fast._core.encoder_py as m, os; print(os.path.dirname(m.__file__))")
if [ "$installed" != "$repo/sse_fast/_core" ]; then
    echo "stubtest.sh: outside the checkout, sse_fast is imported from $installed;" \
        "run pip install -e . first" >&2
    exit 1
fi
MYPYPATH="$work/stubs" python -m mypy.stubtest "${twins[@]}"
