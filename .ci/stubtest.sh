#!/usr/bin/env bash
# The compiled core against its stubs (sse_fast/_*_ext.pyi): a signature, an
# attribute or a name that drifts fails here. The pure twins are compared with
# the compiled modules by tests/test_parity.py.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m mypy.stubtest sse_fast._encoder_ext sse_fast._parser_ext sse_fast._ring_ext \
    --allowlist .ci/stubtest-allowlist.txt
