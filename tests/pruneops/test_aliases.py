"""The alias policy, without MLflow: every plan is idempotent, and promote/rollback invert."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pruneops.aliases import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    Move,
    after,
    plan_promote,
    plan_reconcile,
    plan_remove,
    plan_rollback,
    plan_set,
    still_to_apply,
)
from pruneops.errors import NotFoundError

pytestmark = pytest.mark.unit
VERSIONS = st.sampled_from(["1", "2", "3", "4"])
STATES = st.dictionaries(st.sampled_from([CHAMPION, CHALLENGER, PREVIOUS]), VERSIONS)


@given(STATES, VERSIONS)
def test_every_plan_applied_twice_changes_nothing_the_second_time(state: dict[str, str], version: str) -> None:
    for plan in (lambda s: plan_set(s, CHALLENGER, version), lambda s: plan_remove(s, CHALLENGER),
                 lambda s: plan_promote(s, version)):  # fmt: skip
        once = after(state, plan(state).moves)
        assert plan(once).moves == []


@given(STATES, VERSIONS)
def test_a_promotion_then_a_rollback_serves_the_old_champion_again(state: dict[str, str], version: str) -> None:
    state = state | {CHAMPION: state.get(CHAMPION, "1")}
    if state[CHAMPION] == version:
        return
    promoted = after(state, plan_promote(state, version).moves)
    assert promoted[CHAMPION] == version and promoted[PREVIOUS] == state[CHAMPION]
    assert promoted.get(CHALLENGER) != version  # a challenger that was promoted is consumed
    rolled = after(promoted, plan_rollback(promoted, None, None).moves)
    assert rolled[CHAMPION] == state[CHAMPION] and PREVIOUS not in rolled


def test_rollback_without_a_target_says_why() -> None:
    with pytest.raises(NotFoundError, match="no champion"):
        plan_rollback({}, None, None)
    with pytest.raises(NotFoundError, match="no previous version"):
        plan_rollback({CHAMPION: "2"}, None, ("promote", "2"))
    assert plan_rollback({CHAMPION: "2"}, "v1", None).moves == [Move(CHAMPION, "1", "2")]


@given(STATES, STATES)
def test_reconcile_records_exactly_the_differences(found: dict[str, str], recorded: dict[str, str]) -> None:
    outside, repair = plan_reconcile(found, recorded)
    assert after(recorded, outside) == found  # the outside moves explain what was found
    if repair:
        assert after(found, repair)[PREVIOUS] == recorded[CHAMPION]


def test_a_crashed_operation_is_completed_only_where_nobody_moved_since() -> None:
    moves = [Move(PREVIOUS, "1", None), Move(CHAMPION, "2", "1"), Move(CHALLENGER, None, "2")]
    assert still_to_apply({CHAMPION: "1", CHALLENGER: "2"}, moves) == moves  # nothing applied yet
    assert still_to_apply({CHAMPION: "1", PREVIOUS: "1", CHALLENGER: "2"}, moves) == moves[1:]
    assert still_to_apply({CHAMPION: "7", PREVIOUS: "1", CHALLENGER: "2"}, moves) == moves[2:]  # champion overridden
    assert still_to_apply({CHAMPION: "2", PREVIOUS: "1"}, moves) == []
