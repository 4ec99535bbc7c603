"""``Placement``'s owner table: the seam a Redis Cluster's slot map goes through."""

from __future__ import annotations

import pytest

from sse_fast.brokers.redis._placement import Placement


def test_an_owner_table_places_partitions_instead_of_p_mod_shards() -> None:
    owners = [2, 2, 0, 1, 0, 1, 2, 0]  # a slot map's answer
    placement = Placement("sse:", 8, 3, owners=owners)
    assert [placement.shard_of(p) for p in range(8)] == owners
    assert [p % 3 for p in range(8)] != owners  # the table, not the modulo, answered
    assert placement.partitions_on(0) == (2, 4, 7)
    assert placement.partitions_on(2) == (0, 1, 6)
    assert not placement.single  # partitioned keys even on one partition's worth of masters


def test_a_moved_partition_is_held_by_its_new_shard_only() -> None:
    placement = Placement("sse:", 8, 3, owners=[2, 2, 0, 1, 0, 1, 2, 0])
    assert placement.reassign([2, 0, 0, 1, 0, 1, 2, 0], 3) == [1]
    assert placement.shard_of(1) == 0
    assert placement.partitions_on(0) == (1, 2, 4, 7)
    assert placement.partitions_on(2) == (0, 6)
    assert placement.shard_of(0) == 2  # the others did not move
    # a master met for the first time: a fourth index, the moved partitions only
    assert placement.reassign([3, 0, 0, 1, 0, 1, 3, 0], 4) == [0, 6]
    assert placement.partitions_on(3) == (0, 6) and placement.partitions_on(2) == ()


def test_an_owner_table_of_one_partition_is_not_the_single_layout() -> None:
    assert Placement("sse:", 1, 1).single
    assert not Placement("sse:", 1, 1, owners=[0]).single


@pytest.mark.parametrize(
    ("owners", "says"),
    [
        ([0, 1], "owners gives 2 shard indexes for 3 partitions"),
        ([0, 1, 3], "partition 2 placed on shard 3: give an index from 0 to 2"),
        ([0, -1, 0], "partition 1 placed on shard -1"),
    ],
)
def test_a_wrong_owner_table_is_refused_with_what_to_give(owners: list[int], says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Placement("sse:", 3, 3, owners=owners)


def test_a_modulo_placement_refuses_to_move_a_partition() -> None:
    with pytest.raises(ValueError, match="give Placement an owner table"):
        Placement("sse:", 8, 3).reassign([0] * 8, 3)
    table = Placement("sse:", 8, 3, owners=[0] * 8)
    with pytest.raises(ValueError, match="give one index per partition \\(8\\) over at least 3"):
        table.reassign([0] * 9, 3)
    with pytest.raises(ValueError, match="give one index per partition"):
        table.reassign([0] * 8, 2)  # fewer Redis than before: indexes are never reused
    with pytest.raises(ValueError, match="partition 7 placed on shard 3"):
        table.reassign([0] * 7 + [3], 3)
