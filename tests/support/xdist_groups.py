"""``--dist loadgroup`` kept working on pytest 9.2 (tests/conftest.py registers this).

pytest-xdist 3.8 puts a test marked ``xdist_group("name")`` in its group by appending
``@name`` to ``item._nodeid`` in each worker; its scheduler then sends every test whose
id ends in the same ``@name`` to one worker. pytest 9.2 keeps a node's id in a
structured ``item._id`` (``_pytest.nodeid.NodeId``) and no longer reads ``_nodeid``, so
the suffix is lost without a word and a group's tests are spread over every worker
(pytest-xdist issue #1386): each worker built the docs site (tests/e2e/test_docs_site.py),
ran sse-starlette's original suite again (tests/adapters/originals/) and built the
embedding examples' wheel in the same build directory as the others
(tests/e2e/test_embedding_installs.py). This hook runs after xdist's and adds the
suffix where xdist's did not take; where it did (an older pytest, a fixed xdist), it
does nothing. tests/test_scheduling.py checks that a group runs on one worker.

A grouped test's id ends in ``@group`` in the reports, as with xdist before; pytest
9.2's short summary, which parses the id again, shows a parametrized one as
``test[params]@group]``. To run it again, give the id before the ``@``."""

from __future__ import annotations

import pytest

__all__ = ["group_suffix", "pytest_collection_modifyitems"]


def group_suffix(item: pytest.Item) -> str:
    """``@name`` of the item's ``xdist_group`` marks (xdist's spelling: several names
    sorted and joined by ``_``), or ``""`` for an item in no group. An ``alone`` test is
    in the group ``alone`` whatever its module's group (tests/support/alone.py: the
    ``alone`` tests follow one another on one worker, one drain a session)."""
    names = {
        str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        for mark in item.iter_markers("xdist_group")
    }
    if "alone" in names:
        return "@alone"
    return f"@{'_'.join(sorted(names))}" if names else ""


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a worker of a ``--dist loadgroup`` run, give each grouped item the id its
    group is scheduled by."""
    if not hasattr(config, "workerinput") or not config.getvalue("loadgroup"):
        return
    for item in items:
        suffix = group_suffix(item)
        if not suffix or item.nodeid.endswith(suffix):
            continue
        grouped = f"{item.nodeid}{suffix}"
        if hasattr(item, "_id"):  # pytest >= 9.2: the structured id is the id
            from _pytest.nodeid import NodeId

            item._id = NodeId.parse(grouped)
        else:  # the pytest xdist was written for
            setattr(item, "_nodeid", grouped)  # noqa: B010
