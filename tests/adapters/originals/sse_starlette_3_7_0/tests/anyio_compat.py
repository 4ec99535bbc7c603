# NOT FROM THE SDIST. sse-starlette's git repository has tests/anyio_compat.py as
#     from sse_starlette._utils import collapse_excgroups
# The sdist does not ship it, and sse_starlette._utils is a private module of the
# original (a drop-in has no reason to have it), so the test helper is rebuilt here with
# the same code as sse_starlette 3.7.0's sse_starlette/_utils.py (BSD-3-Clause, see
# ../LICENSE): a test-side helper that unwraps single-exception ExceptionGroups around
# the call under test. It is not part of what the suite measures.
import sys
from collections.abc import Generator
from contextlib import contextmanager

has_exceptiongroups = True
if sys.version_info < (3, 11):
    try:
        from exceptiongroup import BaseExceptionGroup
    except ImportError:
        has_exceptiongroups = False


@contextmanager
def collapse_excgroups() -> Generator[None, None, None]:
    try:
        yield
    except BaseException as exc:
        if has_exceptiongroups:
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]

        raise exc


__all__ = ["collapse_excgroups"]
