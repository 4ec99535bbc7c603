"""The build must not hide behind the pure-Python fallback. Real processes: a fresh
interpreter with the switch set chooses the twins at import, as a user's process does."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sse_fast
from sse_fast import _core
from sse_fast._core.native import NATIVE_MODULES

ROOT = Path(__file__).parents[2]
PACKAGE = Path(sse_fast.__file__).parent


#: the tests that import sse_fast afresh, the switch set
FRESH_INTERPRETER = pytest.mark.processes(
    "a fresh interpreter choosing the core at import, as the switch says"
)


def test_each_native_module_has_its_source_twin_and_stub() -> None:
    missing = [
        str(path)
        for name in NATIVE_MODULES
        for path in (
            ROOT / "src_ext" / f"{name}_ext.pyx",
            PACKAGE / "_core" / f"{name}_py.py",
            PACKAGE / "_core" / f"{name}_ext.pyi",
        )
        if not path.is_file()
    ]
    assert not missing, f"named in NATIVE_MODULES (sse_fast/_core/native.py), missing: {missing}"
    sources = {p.name.removesuffix("_ext.pyx") for p in (ROOT / "src_ext").glob("*_ext.pyx")}
    assert sources == set(NATIVE_MODULES), "a .pyx not in NATIVE_MODULES is never built"


def test_extension_loaded_unless_disabled() -> None:
    if sse_fast.NO_EXTENSIONS:
        assert sse_fast.HAS_EXTENSIONS is False
    else:
        assert sse_fast.HAS_EXTENSIONS, (
            "the Cython extension should have loaded but did not "
            f"({sse_fast.EXTENSION_IMPORT_ERROR!r}); build it with `pip install -e .`"
        )
    kind = "ext" if sse_fast.HAS_EXTENSIONS else "py"
    for name in NATIVE_MODULES:  # each module of one implementation, none of the other
        module = importlib.import_module(f"sse_fast._core.{name}_{kind}")
        if kind == "ext":
            assert module.__file__.endswith((".so", ".pyd")), module.__file__
        chosen = [n for n in module.__all__ if hasattr(_core, n)]
        assert chosen, f"the chooser takes nothing from {module.__name__}"
        for n in chosen:
            assert getattr(_core, n) is getattr(module, n), f"_core.{n} is not {module.__name__}'s"


@FRESH_INTERPRETER
def test_switch_selects_pure_python_twins() -> None:
    code = (
        "import sse_fast, sse_fast._core.encoder_py as e, sse_fast._core.ring_py as r;"
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


@FRESH_INTERPRETER
def test_parity_compares_the_extension_whenever_it_was_built() -> None:
    """SSE_FAST_NO_EXTENSIONS chooses what ``import sse_fast`` uses, not what the
    parity tests compare: a built extension is compared with the twins in both
    modes, and only a tree without one skips them, saying why."""
    code = (
        "import sse_fast, tests.conftest as c;"
        "print(sse_fast.HAS_EXTENSIONS, c.PARITY_IMPLEMENTATIONS, c.PARITY_SKIP_REASON)"
    )
    env = dict(os.environ, SSE_FAST_NO_EXTENSIONS="1")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    try:
        for module in NATIVE_MODULES:
            importlib.import_module(f"sse_fast._core.{module}_ext")
    except ImportError as exc:
        assert out.stdout.startswith("False ['py'] the extension cannot be imported"), out.stdout
        assert "SSE_FAST_NO_EXTENSIONS=1 and no extension was built" in out.stdout
        assert str(exc) in out.stdout
    else:
        assert out.stdout.strip() == "False ['ext', 'py'] None"
