"""The audit trail's record format: one alias operation, as the tags of one MLflow run.

Every alias operation (set, remove, promote, rollback, a reconcile's repair, or a change found
that was made outside pruneops) is one run in the ``pruneops-audit`` experiment, tagged with
its model so ``pruneops history`` finds it by search. Runs grow without limit where registered
model tags did not, and reading the aliases never reads them.

The run is written *before* its moves are applied and finished after: a process killed in
between leaves a RUNNING run whose moves the next alias operation (or reconcile) completes, so
a move is never applied without its record, nor recorded without being applied.

>>> from pruneops.aliases import Move, after
>>> op = Operation("2026-11-24T10:00:00+00:00", "digits", "promote", "ci", "gate passed",
...                [Move("previous", "1", None), Move("champion", "2", "1")], {"champion": "2", "previous": "1"})
>>> Operation.from_tags(op.tags()) == op
True
>>> [(e.alias, e.version, e.from_version) for e in op.events()]
[('previous', '1', None), ('champion', '2', '1')]
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from pruneops.aliases import Move, after

AUDIT_EXPERIMENT = "pruneops-audit"
#: Run tags of an audit record. ``MODEL`` is what history searches by.
MODEL, ACTION, AT = "pruneops.audit.model", "pruneops.audit.action", "pruneops.audit.at"
WHO, WHY = "pruneops.audit.who", "pruneops.audit.why"
MOVES, ALIASES = "pruneops.audit.moves", "pruneops.audit.aliases"
#: MLflow's limit on a tag value (characters); a longer reason is cut.
TAG_LIMIT = 5000


@dataclass(frozen=True)
class AliasEvent:
    """One recorded alias change: who moved which alias, from which version to which, and why."""

    at: str
    action: str
    alias: str
    version: str | None
    from_version: str | None
    who: str
    why: str


@dataclass(frozen=True)
class Operation:
    """One alias operation: its moves, and the aliases it leaves (what reconcile compares with)."""

    at: str
    model: str
    action: str
    who: str
    why: str
    moves: list[Move]
    aliases: dict[str, str]

    def tags(self) -> dict[str, str]:
        """The run tags that record this operation."""
        return {
            MODEL: self.model,
            ACTION: self.action,
            AT: self.at,
            WHO: self.who[:TAG_LIMIT],
            WHY: self.why[:TAG_LIMIT],
            MOVES: json.dumps([asdict(move) for move in self.moves]),
            ALIASES: json.dumps(self.aliases, sort_keys=True),
        }

    @classmethod
    def from_tags(cls, tags: dict[str, Any]) -> Operation:
        """Read an operation back from its run's tags."""
        return cls(
            at=tags[AT],
            model=tags[MODEL],
            action=tags[ACTION],
            who=tags.get(WHO, ""),
            why=tags.get(WHY, ""),
            moves=[Move(**move) for move in json.loads(tags[MOVES])],
            aliases=json.loads(tags[ALIASES]),
        )

    def events(self) -> list[AliasEvent]:
        """One history line per move."""
        return [AliasEvent(self.at, self.action, m.alias, m.version, m.from_version, self.who, self.why)
                for m in self.moves]  # fmt: skip


def recorded_aliases(events: list[AliasEvent]) -> dict[str, str]:
    """The aliases a list of events leaves, oldest event first (for registries that kept events as tags).

    >>> recorded_aliases([AliasEvent("1", "set", "champion", "1", None, "me", ""),
    ...                   AliasEvent("2", "promote", "champion", "2", "1", "me", ""),
    ...                   AliasEvent("3", "set", "challenger", "3", None, "me", ""),
    ...                   AliasEvent("4", "remove", "challenger", None, "3", "me", "")])
    {'champion': '2'}
    """
    return after({}, [Move(e.alias, e.version, e.from_version) for e in events])
