"""The alias policy as pure functions: given the aliases a model holds, the moves an operation makes.

``champion`` serves, ``challenger`` is under analysis, ``previous`` is the rollback target.
Nothing here talks to MLflow: :class:`pruneops.registry.Registry` reads the state, asks a
``plan_*`` function for the moves, records them in the audit trail and applies them. An
operation whose state is already right plans no moves, which is what makes every alias
operation idempotent.

>>> state = {"champion": "1", "challenger": "2"}
>>> plan = plan_promote(state, "2")
>>> [(m.alias, m.version) for m in plan.moves]
[('previous', '1'), ('champion', '2'), ('challenger', None)]
>>> after(state, plan.moves)
{'champion': '2', 'previous': '1'}
>>> plan_promote(after(state, plan.moves), "2").moves
[]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pruneops.errors import NotFoundError

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"


@dataclass(frozen=True)
class Move:
    """Point ``alias`` at ``version`` (``None``: delete it); it pointed at ``from_version`` before."""

    alias: str
    version: str | None
    from_version: str | None


@dataclass(frozen=True)
class Plan:
    """The moves of one operation, the version it is about and the one it replaces, and a sentence."""

    action: str
    version: str | None
    from_version: str | None
    moves: list[Move] = field(default_factory=list)
    message: str = ""


def after(state: Mapping[str, str], moves: Sequence[Move]) -> dict[str, str]:
    """The aliases once ``moves`` are applied to ``state``.

    >>> after({"champion": "1"}, [Move("champion", "2", "1"), Move("challenger", None, "2")])
    {'champion': '2'}
    """
    result = dict(state)
    for move in moves:
        if move.version is None:
            result.pop(move.alias, None)
        else:
            result[move.alias] = move.version
    return result


def plan_set(state: Mapping[str, str], alias: str, version: str) -> Plan:
    """Point one alias at a version.

    >>> plan_set({"challenger": "3"}, "challenger", "3").message
    'challenger already v3'
    """
    current = state.get(alias)
    if current == version:
        return Plan("set", version, current, [], f"{alias} already v{version}")
    return Plan("set", version, current, [Move(alias, version, current)], f"{alias} -> v{version}")


def plan_remove(state: Mapping[str, str], alias: str) -> Plan:
    """Delete one alias (withdraw a rejected challenger, for example).

    >>> plan_remove({"champion": "1", "challenger": "2"}, "challenger").moves
    [Move(alias='challenger', version=None, from_version='2')]
    """
    current = state.get(alias)
    if current is None:
        return Plan("remove", None, None, [], f"{alias} is not set")
    return Plan("remove", None, current, [Move(alias, None, current)], f"{alias} v{current} removed")


def plan_promote(state: Mapping[str, str], version: str) -> Plan:
    """Make ``version`` the champion: the old champion becomes ``previous``, a challenger that was it is consumed.

    ``previous`` moves before ``champion``, so a partly applied promotion leaves the old
    champion serving with a valid rollback target.

    >>> plan_promote({}, "1").moves
    [Move(alias='champion', version='1', from_version=None)]
    """
    old = state.get(CHAMPION)
    if old == version:
        return Plan("promote", old, old, [], f"v{old} is already champion")
    moves = [Move(PREVIOUS, old, state.get(PREVIOUS))] if old is not None else []
    moves.append(Move(CHAMPION, version, old))
    if state.get(CHALLENGER) == version:
        moves.append(Move(CHALLENGER, None, version))
    return Plan("promote", version, old, moves, f"champion v{old} -> v{version}")


def plan_rollback(
    state: Mapping[str, str], to: str | None, last_champion_action: tuple[str, str | None] | None
) -> Plan:
    """Make ``to`` (default: ``previous``) the champion again and consume ``previous``.

    ``last_champion_action`` is the last recorded (action, version) of the champion alias: a
    second rollback, or one racing another, finds the champion already rolled back.

    >>> plan_rollback({"champion": "3", "previous": "2"}, None, None).moves
    [Move(alias='champion', version='2', from_version='3'), Move(alias='previous', version=None, from_version='2')]
    >>> plan_rollback({"champion": "2"}, None, ("rollback", "2")).message
    'already rolled back to v2'
    """
    champion = state.get(CHAMPION)
    if champion is None:
        raise NotFoundError("no champion to roll back")
    target = to.removeprefix("v") if to is not None else state.get(PREVIOUS)
    if target is None:
        if last_champion_action == ("rollback", champion):
            return Plan("rollback", champion, champion, [], f"already rolled back to v{champion}")
        raise NotFoundError("no previous version to roll back to; pass one with --to")
    if target == champion:
        return Plan("rollback", champion, champion, [], f"v{champion} is already champion")
    moves = [Move(CHAMPION, target, champion)]
    if PREVIOUS in state:
        moves.append(Move(PREVIOUS, None, state[PREVIOUS]))
    return Plan("rollback", target, champion, moves, f"champion v{champion} -> v{target}")


def plan_reconcile(found: Mapping[str, str], recorded: Mapping[str, str]) -> tuple[list[Move], list[Move]]:
    """Changes made outside pruneops (already in the registry: to record), and the repair they call for.

    When the champion was replaced outside, ``previous`` is pointed at the champion it
    replaced, as a promotion would have done, so ``rollback`` returns to what served before.

    >>> outside, repair = plan_reconcile({"champion": "3", "previous": "1"}, {"champion": "2", "previous": "1"})
    >>> outside, repair
    ([Move(alias='champion', version='3', from_version='2')], [Move(alias='previous', version='2', from_version='1')])
    """
    outside = [
        Move(alias, found.get(alias), recorded.get(alias))
        for alias in sorted(set(found) | set(recorded))
        if found.get(alias) != recorded.get(alias)
    ]
    replaced, champion = recorded.get(CHAMPION), found.get(CHAMPION)
    repair = []
    if any(m.alias == CHAMPION for m in outside) and replaced and champion and found.get(PREVIOUS) != replaced:
        repair.append(Move(PREVIOUS, replaced, found.get(PREVIOUS)))
    return outside, repair


def still_to_apply(found: Mapping[str, str], moves: Sequence[Move]) -> list[Move]:
    """Of a recorded operation's moves, those a crash left unapplied (and nobody has overridden since).

    A move whose alias already holds its target is done; one whose alias moved elsewhere was
    overridden and is left alone (reconciling records that as an outside change).

    >>> moves = [Move("previous", "1", None), Move("champion", "2", "1")]
    >>> still_to_apply({"champion": "1", "previous": "1"}, moves)
    [Move(alias='champion', version='2', from_version='1')]
    >>> still_to_apply({"champion": "5", "previous": "1"}, moves)
    []
    """
    state = dict(found)
    pending = []
    for move in moves:
        if state.get(move.alias) == move.from_version and move.from_version != move.version:
            pending.append(move)
            state = after(state, [move])
    return pending
