"""The native modules, listed once.

Each name is a Cython extension ``src_ext/<name>_ext.pyx`` (built as
``sse_fast._core.<name>_ext``), its pure-Python twin ``sse_fast/_core/<name>_py.py`` and
the API both follow, ``sse_fast/_core/<name>_ext.pyi``. ``setup.py``, the chooser
(``_core/__init__.py``), ``.ci/stubtest.sh`` and the tests all read this list.

This module imports nothing, so that ``setup.py`` can run it without importing
the package (and its dependencies) at build time.
"""

NATIVE_MODULES = ("encoder", "parser", "ring", "publish", "records", "topic")
