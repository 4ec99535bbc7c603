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
from setuptools.command.build_ext import build_ext

NATIVE_MODULES = runpy.run_path("sse_fast/_core/native.py")["NATIVE_MODULES"]
NO_EXTENSIONS = os.environ.get("SSE_FAST_NO_EXTENSIONS", "") not in ("", "0")
TRACE = os.environ.get("SSE_FAST_CYTHON_TRACE", "") not in ("", "0")


def extensions() -> list:
    """The native modules from their ``.pyx`` sources: ``BuildExt`` turns them into C
    when it builds them."""
    if NO_EXTENSIONS:
        return []
    macros = [("CYTHON_TRACE_NOGIL", "1")] if TRACE else []
    # the records codec takes its CRC-32 from zlib (Debian: zlib1g-dev), as Python's own does
    libraries = {"records": ["z"]}
    return [
        Extension(
            f"sse_fast._core.{name}_ext",
            [f"src_ext/{name}_ext.pyx"],
            define_macros=macros,
            libraries=libraries.get(name, []),
        )
        for name in NATIVE_MODULES
    ]


class BuildExt(build_ext):
    """Cythonizes when the extensions are built, not when ``setup.py`` is read: pip
    reads it three times for one install (its build requirements, its metadata, the
    build), and Cython saw the C files as stale each time (they are older than its own
    headers, written anew in each of pip's isolated build environments). Cython and the
    C compiler take the machine's cores (a module each): a no-op editable install took
    21.4 s before, 16.6 s with this (2026-11-28, two cores)."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        from Cython.Build import cythonize

        # into the Extension objects setuptools finalized (cythonize returns new ones)
        built = {ext.name: ext for ext in self.extensions}
        for done in cythonize(
            self.extensions,
            language_level=3,
            nthreads=os.cpu_count() or 1,
            # src_ext: _scan.pxd, shared by the encoder and the parser; the root: the .pxd
            # of a module others cimport, beside its .pyi (sse_fast/_core/ring_ext.pxd)
            include_path=["src_ext", "."],
            compiler_directives={
                "boundscheck": False,
                "wraparound": False,
                "cdivision": True,
                "linetrace": TRACE,
                "embedsignature": True,
            },
        ):
            built[done.name].sources = done.sources
        super().run()


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
