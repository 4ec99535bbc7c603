"""Granian behind one door: everything of ``sse-fast serve`` that touches Granian's
private names lives in this package, and only here (``tests/test_layout.py`` checks it).

* ``_listener``: the process server whose workers listen on sockets made here
  (``SO_SNDBUF``, ``TCP_DEFER_ACCEPT``): ``MPServer._init_shared_socket`` and
  ``_spawn_worker`` overridden, ``SocketHolder`` built.
* ``_group_stop``: a stop signal to the whole process group as Granian's supervisor
  sees it: ``_stop_workers`` wrapped, ``main_loop_interrupt`` replaced,
  ``interrupt_signal``, ``interrupt_children`` and ``wrks`` read, the ``_granian``
  logger's lines rewritten.
* Here: whether Granian's extension is loaded yet (``extension_loaded``), and the
  name of the type of Granian's eager ``send`` result (``EAGER_SEND_TYPE``).

``tests/test_granian_contract.py`` checks each of those names against the installed
Granian, and fails by name when a release changes one (but ``EAGER_SEND_TYPE``, which
only a running server shows: ``tests/e2e/test_e2e.py`` asks a real one whether its
sends were eager); ``docs/operations/granian.md`` says what each works around and
what change upstream would let it go. Importing this package imports neither Granian
nor its two modules (the ASGI layer takes ``EAGER_SEND_TYPE`` from here); ``serve``
imports them.
"""

from __future__ import annotations

import sys

__all__ = ["EAGER_SEND_TYPE", "extension_loaded"]

#: the name of the type of what Granian's ``send`` returns when the write is already
#: handed over (``sse_fast._asgi.SendStyle``): not exported by Granian under any name
EAGER_SEND_TYPE = "PyEmptyAwaitable"

#: Granian's compiled extension, loaded with the first import of Granian
_EXTENSION = "granian._granian"


def extension_loaded() -> bool:
    """Whether Granian's extension (and so its allocator) is loaded in this process."""
    return _EXTENSION in sys.modules
