"""Build script: compiles the Cython core unless SSE_FAST_NO_EXTENSIONS=1.

The same variable is read at import time by the chooser, ``sse_fast/_core/__init__.py``:
with it set, the build skips the extensions and the package uses its pure-Python
twins. The modules built are listed in ``sse_fast/_core/native.py``, run here as a file:
importing the package would import its dependencies (orjson, ...), which the
build environment does not have.
"""

import os
import runpy

from setuptools import Extension, setup

NATIVE_MODULES = runpy.run_path("sse_fast/_core/native.py")["NATIVE_MODULES"]
NO_EXTENSIONS = os.environ.get("SSE_FAST_NO_EXTENSIONS", "") not in ("", "0")
TRACE = os.environ.get("SSE_FAST_CYTHON_TRACE", "") not in ("", "0")


def extensions() -> list:
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    macros = [("CYTHON_TRACE_NOGIL", "1")] if TRACE else []
    # the records codec takes its CRC-32 from zlib (Debian: zlib1g-dev), as Python's own does
    libraries = {"records": ["z"]}
    modules = [
        Extension(
            f"sse_fast._core.{name}_ext",
            [f"src_ext/{name}_ext.pyx"],
            define_macros=macros,
            libraries=libraries.get(name, []),
        )
        for name in NATIVE_MODULES
    ]
    return cythonize(
        modules,
        language_level=3,
        # src_ext: _scan.pxd, shared by the encoder and the parser; the root: the .pxd of a
        # module others cimport, beside its .pyi (sse_fast/_core/ring_ext.pxd)
        include_path=["src_ext", "."],
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "linetrace": TRACE,
            "embedsignature": True,
        },
    )


setup(ext_modules=extensions())
