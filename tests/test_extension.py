"""The build must not hide behind the pure-Python fallback."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import sse_fast
from sse_fast import _encoder_py, _parser_py, _ring_py


def test_extension_loaded_unless_disabled() -> None:
    if sse_fast.NO_EXTENSIONS:
        assert sse_fast.HAS_EXTENSIONS is False
        assert sse_fast.encode is _encoder_py.encode
        assert sse_fast.Parser is _parser_py.Parser
        assert sse_fast.Ring is _ring_py.Ring
        return
    assert sse_fast.HAS_EXTENSIONS, (
        "the Cython extension should have loaded but did not "
        f"({sse_fast.EXTENSION_IMPORT_ERROR!r}); build it with `pip install -e .`"
    )
    from sse_fast import _encoder_ext, _parser_ext, _ring_ext

    assert sse_fast.encode is _encoder_ext.encode
    assert sse_fast.Event is _encoder_ext.Event
    assert sse_fast.Parser is _parser_ext.Parser
    assert sse_fast.Ring is _ring_ext.Ring
    assert _encoder_ext.__file__.endswith((".so", ".pyd"))


def test_switch_selects_pure_python_twins() -> None:
    code = (
        "import sse_fast, sse_fast._encoder_py as e, sse_fast._ring_py as r;"
        "assert sse_fast.HAS_EXTENSIONS is False;"
        "assert sse_fast.encode is e.encode and sse_fast.Ring is r.Ring;"
        "print('ok')"
    )
    env = dict(os.environ, SSE_FAST_NO_EXTENSIONS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_parity_compares_the_extension_whenever_it_was_built() -> None:
    """SSE_FAST_NO_EXTENSIONS chooses what ``import sse_fast`` uses, not what the
    parity tests compare: a built extension is compared with the twins in both
    modes, and only a tree without one skips them, saying why."""
    code = (
        "import sse_fast, tests.conftest as c;"
        "print(sse_fast.HAS_EXTENSIONS, c.PARITY_IMPLEMENTATIONS, c.PARITY_SKIP_REASON)"
    )
    root = Path(__file__).parent.parent
    env = dict(os.environ, SSE_FAST_NO_EXTENSIONS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    try:
        for module in ("_encoder_ext", "_parser_ext", "_ring_ext"):
            importlib.import_module(f"sse_fast.{module}")
    except ImportError as exc:
        assert out.stdout.startswith("False ['py'] the extension cannot be imported"), out.stdout
        assert "SSE_FAST_NO_EXTENSIONS=1 and no extension was built" in out.stdout
        assert str(exc) in out.stdout
    else:
        assert out.stdout.strip() == "False ['ext', 'py'] None"
