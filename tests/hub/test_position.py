"""The newest applied position (what "resumed" and a new stream's first id rest on):
one owner, the topics table (``TopicTable``, Cython and its pure twin), that moves
it through named operations: its start given at construction, ``store`` (events
applied) and ``skip_to`` (positions past without events here); read-only to
everyone else."""

from __future__ import annotations

from types import ModuleType

import pytest

from sse_fast.brokers._sequencing import Sequenced
from sse_fast.hub import Hub
from sse_fast.hub._topics import Topics
from sse_fast.settings import Settings

from ..conftest import PARITY_IMPLEMENTATIONS

MODULES = {
    name: __import__(f"sse_fast._core.topic_{name}", fromlist=["x"])
    for name in PARITY_IMPLEMENTATIONS
}


@pytest.fixture(params=sorted(MODULES))
def module(request: pytest.FixtureRequest) -> ModuleType:
    return MODULES[request.param]


def test_the_position_starts_where_the_table_is_told(module: ModuleType) -> None:
    assert module.TopicTable(4, 100, 10**9).last_position == 0
    assert module.TopicTable(4, 100, 10**9, -1).last_position == -1
    assert module.TopicTable(4, 100, 10**9, last_position=41).last_position == 41


def test_the_position_is_read_only_outside_the_table(module: ModuleType) -> None:
    table = module.TopicTable(4, 100, 10**9, 5)
    with pytest.raises(AttributeError):
        table.last_position = 9
    assert table.last_position == 5


def test_skip_to_raises_the_position_and_never_lowers_it(module: ModuleType) -> None:
    table = module.TopicTable(4, 100, 10**9, 5)
    table.skip_to(12)
    assert table.last_position == 12
    table.skip_to(7)  # a skip behind what was applied changes nothing
    assert table.last_position == 12
    table.skip_to(12)
    assert table.last_position == 12


def test_storing_and_skipping_move_the_same_position() -> None:
    topics = Topics(Settings(), last_position=9)
    item = Sequenced(10, "10", ("a",), b"data: 10\n\n", 0.0)
    assert topics.store([item], 0, 0.0, {}, []) == (1, None)
    assert topics.last_position == 10
    topics.skip_to(20)
    assert topics.last_position == 20
    later = Sequenced(15, "15", ("b",), b"data: 15\n\n", 0.0)
    topics.store([later], 0, 0.0, {}, [])  # stored, but behind the position: no change
    assert topics.last_position == 20


def test_a_hub_starts_just_before_its_brokers_first_position() -> None:
    hub = Hub(Settings())
    assert hub.topics.last_position == hub.broker.first_position - 1
    assert not hasattr(hub.fanout, "last_position")  # one owner: the table, read there
