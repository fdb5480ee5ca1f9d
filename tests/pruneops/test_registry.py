"""Registry client against a real SQLite store and a real ``mlflow server`` on loopback."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pruneops.errors import ModelFormatError, NotFoundError, RegistryError
from pruneops.modelio import WEIGHTS_FILE, ArchSpec, save_model
from pruneops.probe import CLASSES, record
from pruneops.registry import CHALLENGER, CHAMPION, PREVIOUS, Registry

SPEC = ArchSpec("torch.nn:Linear", {"in_features": 4, "out_features": 3})


def saved_model(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = nn.Linear(4, 3)
    return save_model(model, folder, SPEC, probe=record(model, torch.randn(16, 4), CLASSES))


def register(registry: Registry, name: str, tmp_path: Path, seed: int = 0, gate: str = "passed") -> str:
    folder = saved_model(tmp_path / f"model-{seed}", seed)
    return registry.register(name, folder, tags={"source": "test", "gate": gate, "seed": seed}).version


def test_register_and_read(registry: Registry, name: str, tmp_path: Path) -> None:
    reference = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    info = registry.register(
        name,
        saved_model(tmp_path / "m"),
        tags={"source": "pipeline", "parent_version": "1", "sparsity": 0.5, "skipped": None},
        metrics={"accuracy": 0.97},
        reference=reference,
        feature_names=["a", "b", "c"],
        report={"metrics": {"accuracy": 0.97}},
    )
    assert info.version == "1"
    assert info.tag("source") == "pipeline" and info.tag("parent_version") == "1" and info.tag("sparsity") == "0.5"
    assert "pruneops.skipped" not in info.tags
    assert registry.version(name, 1).tags == info.tags
    loaded = registry.load_model(name, "1")
    torch.manual_seed(0)
    torch.testing.assert_close(loaded.weight, nn.Linear(4, 3).weight)
    frame = registry.load_reference(name, "1")
    assert list(frame.columns) == ["a", "b", "c"]
    np.testing.assert_allclose(frame.to_numpy(), reference)
    report = registry.download(name, "1", tmp_path / "dl", part="report")
    assert (report / "evaluation.json").read_text().count("accuracy") == 1


def test_promote_rollback_cycle(registry: Registry, name: str, tmp_path: Path) -> None:
    v1, v2, v3 = (register(registry, name, tmp_path, seed) for seed in range(3))
    assert registry.set_alias(name, CHAMPION, v1, "baseline").changed
    registry.set_alias(name, CHALLENGER, v2, "pipeline run")
    change = registry.promote(name, why="analysis passed")
    assert change.changed and (change.version, change.from_version) == (v2, v1)
    assert registry.aliases(name) == {CHAMPION: v2, PREVIOUS: v1}
    assert registry.version(name, v2).tag("promoted_at")

    again = registry.promote(name, v2)
    assert not again.changed and registry.aliases(name) == {CHAMPION: v2, PREVIOUS: v1}

    back = registry.rollback(name, why="p99 regression")
    assert back.changed and (back.version, back.from_version) == (v1, v2)
    assert registry.aliases(name) == {CHAMPION: v1}
    rolled = registry.version(name, v2)
    assert rolled.tag("rollback_reason") == "p99 regression" and rolled.tag("rolled_back_at")

    twice = registry.rollback(name, why="p99 regression")
    assert not twice.changed and "already rolled back to v1" in twice.message
    assert registry.aliases(name) == {CHAMPION: v1}

    explicit = registry.rollback(name, to=v3, why="operator choice")
    assert explicit.changed and registry.alias(name, CHAMPION).version == v3

    history = registry.history(name)
    actions = [(e.action, e.alias, e.version) for e in history]
    assert actions == [
        ("set", CHAMPION, v1),
        ("set", CHALLENGER, v2),
        ("promote", PREVIOUS, v1),
        ("promote", CHAMPION, v2),
        ("promote", CHALLENGER, None),
        ("rollback", CHAMPION, v1),
        ("rollback", PREVIOUS, None),
        ("rollback", CHAMPION, v3),
    ]
    assert history[5].why == "p99 regression" and history[5].who and history[5].from_version == v2
    assert [e.at for e in history] == sorted(e.at for e in history)


def test_alias_changes_made_outside_pruneops_are_recorded_and_rolled_back(
    registry: Registry, name: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    v1, v2, v3 = (register(registry, name, tmp_path, seed) for seed in range(3))
    registry.set_alias(name, CHAMPION, v1, "baseline")
    registry.set_alias(name, CHALLENGER, v2, "pipeline run")
    registry.promote(name, why="analysis passed")  # champion v2, previous v1
    # What a click in the MLflow UI does: the alias moves, and pruneops is not told.
    ui = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    ui.set_registered_model_alias(name, CHAMPION, v3)
    ui.set_registered_model_alias(name, CHALLENGER, v1)
    before = registry.history(name)
    assert all(e.version != v3 for e in before)  # not recorded yet

    found = registry.reconcile(name)
    assert [(e.action, e.alias, e.from_version, e.version) for e in found] == [
        ("outside", CHALLENGER, None, v1),
        ("outside", CHAMPION, v2, v3),
        ("reconcile", PREVIOUS, v1, v2),  # previous follows the champion the UI replaced
    ]
    assert found[0].who == "MLflow UI or API" and "not made by pruneops" in found[0].why
    assert registry.history(name)[len(before) :] == found
    assert registry.reconcile(name) == []  # recorded once
    assert registry.aliases(name) == {CHAMPION: v3, PREVIOUS: v2, CHALLENGER: v1}

    # rollback after the UI change goes back to what served before it...
    back = registry.rollback(name, why="UI change was wrong")
    assert (back.from_version, back.version) == (v3, v2) and registry.alias(name, CHAMPION).version == v2

    # ...and reconciles by itself: a UI deletion is recorded before pruneops acts.
    ui.delete_registered_model_alias(name, CHALLENGER)
    registry.promote(name, v1, why="operator")
    tail = [(e.action, e.alias, e.version) for e in registry.history(name)[-3:]]
    assert tail == [("outside", CHALLENGER, None), ("promote", PREVIOUS, v2), ("promote", CHAMPION, v1)]


def test_an_operation_of_another_process_in_flight_is_completed_not_called_outside(
    registry: Registry, name: str, tmp_path: Path
) -> None:
    """Another process has recorded its promotion and not yet moved the aliases: reconcile finishes it."""
    from pruneops.aliases import Move
    from pruneops.audit import Operation

    v1, v2 = (register(registry, name, tmp_path, seed) for seed in range(2))
    registry.set_alias(name, CHAMPION, v1)
    moves = [Move(PREVIOUS, v1, None), Move(CHAMPION, v2, v1)]
    registry._begin(Operation("2999-01-01T00:00:00+00:00", name, "promote", "other process", "its own move",
                              moves, {CHAMPION: v2, PREVIOUS: v1}))  # fmt: skip
    assert registry.reconcile(name) == []  # nothing outside: the record was there first
    assert registry.aliases(name) == {CHAMPION: v2, PREVIOUS: v1}
    assert [(e.action, e.alias) for e in registry.history(name)] == [
        ("set", CHAMPION), ("promote", PREVIOUS), ("promote", CHAMPION)
    ]  # fmt: skip


KILLED_PROMOTION = """
import os, sys
from mlflow import MlflowClient
from pruneops.registry import Registry

real = MlflowClient.set_registered_model_alias
calls = []
def killed_on_second_move(self, *args):
    calls.append(args)
    if len(calls) == 2:
        os._exit(9)  # killed: previous moved, champion not yet
    return real(self, *args)
MlflowClient.set_registered_model_alias = killed_on_second_move
Registry().promote(sys.argv[1], why="killed half way")
"""


def test_a_process_killed_between_two_moves_leaves_a_record_the_next_operation_completes(
    registry: Registry, name: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    v1, v2 = (register(registry, name, tmp_path, seed) for seed in range(2))
    registry.set_alias(name, CHAMPION, v1)
    registry.set_alias(name, CHALLENGER, v2)
    killed = subprocess.run([sys.executable, "-c", KILLED_PROMOTION, name], capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert killed.returncode == 9, killed.stderr
    assert registry.aliases(name) == {CHAMPION: v1, CHALLENGER: v2, PREVIOUS: v1}  # half applied
    assert registry.reconcile(name) == []  # completed, and nothing called outside
    assert registry.aliases(name) == {CHAMPION: v2, PREVIOUS: v1}
    promote = [(e.alias, e.version) for e in registry.history(name) if e.action == "promote"]
    assert promote == [(PREVIOUS, v1), (CHAMPION, v2), (CHALLENGER, None)]  # recorded once
    assert not [e for e in registry.history(name) if e.action == "outside"]


def test_the_trail_grows_in_audit_runs_not_on_the_registered_model(
    registry: Registry, name: str, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    v1, v2 = (register(registry, name, tmp_path, seed) for seed in range(2))
    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    registry.set_alias(name, CHAMPION, v1)
    tags_before = dict(client.get_registered_model(name).tags)
    for _ in range(5):
        registry.set_alias(name, CHALLENGER, v2)
        registry.promote(name)
        registry.rollback(name)
    assert dict(client.get_registered_model(name).tags) == tags_before  # nothing piles up there
    assert len(registry.history(name)) == 1 + 5 * (1 + 3 + 2)
    audit = client.get_experiment_by_name("pruneops-audit")
    runs = client.search_runs([audit.experiment_id], f"tags.`pruneops.audit.model` = '{name}'", max_results=100)
    assert len(runs) == 1 + 5 * 3 and {r.info.status for r in runs} == {"FINISHED"}


def test_a_server_polls_one_alias(registry: Registry, name: str, tmp_path: Path) -> None:
    v1 = register(registry, name, tmp_path)
    assert registry.alias_version(name, CHAMPION) is None
    registry.set_alias(name, CHAMPION, v1)
    assert registry.alias_version(name, CHAMPION) == v1
    with pytest.raises(NotFoundError, match="not registered"):
        registry.alias_version("no-such-model-" + name, CHAMPION)


def test_events_kept_as_model_tags_by_older_registries_still_count(
    registry: Registry, name: str, tmp_path: Path
) -> None:
    import json

    from mlflow import MlflowClient

    v1, v2 = (register(registry, name, tmp_path, seed) for seed in range(2))
    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    # What pruneops wrote before the audit runs: the move, then an event tag on the model.
    client.set_registered_model_alias(name, CHAMPION, v1)
    old = {"at": "2026-01-01T00:00:00+00:00", "action": "set", "alias": CHAMPION, "version": v1,
           "from_version": None, "who": "old pruneops", "why": "before"}  # fmt: skip
    client.set_registered_model_tag(name, "pruneops.event.00000000000000000001.abcdef", json.dumps(old))
    assert registry.reconcile(name) == []  # the old record explains the alias
    registry.set_alias(name, CHALLENGER, v2)
    history = registry.history(name)
    assert [(e.who, e.alias) for e in history] == [("old pruneops", CHAMPION), (history[1].who, CHALLENGER)]


def test_failed_gate_never_gets_an_alias(registry: Registry, name: str, tmp_path: Path) -> None:
    v1 = register(registry, name, tmp_path, 0, gate="failed")
    with pytest.raises(RegistryError, match="failed its gate"):
        registry.set_alias(name, CHALLENGER, v1)
    with pytest.raises(RegistryError, match="failed its gate"):
        registry.promote(name, v1)
    assert registry.aliases(name) == {}


def test_versions_lists_aliases(registry: Registry, name: str, tmp_path: Path) -> None:
    v1, v2 = (register(registry, name, tmp_path, seed) for seed in range(2))
    registry.set_alias(name, CHAMPION, v1)
    listed = registry.versions(name)
    assert [(v.version, v.aliases) for v in listed] == [(v1, (CHAMPION,)), (v2, ())]


def test_unknown_things(registry: Registry, name: str, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match=f"model '{name}' is not registered"):
        registry.history(name)
    register(registry, name, tmp_path)
    with pytest.raises(NotFoundError, match="not found"):
        registry.version(name, 7)
    with pytest.raises(NotFoundError, match="has no alias 'champion'"):
        registry.alias(name, CHAMPION)
    with pytest.raises(NotFoundError, match="no challenger to promote"):
        registry.promote(name)
    with pytest.raises(NotFoundError, match="no champion to roll back"):
        registry.rollback(name)
    registry.set_alias(name, CHAMPION, "1")
    with pytest.raises(NotFoundError, match="no previous version"):
        registry.rollback(name)
    with pytest.raises(NotFoundError):
        registry.rollback(name, to="9")
    assert registry.aliases(name) == {CHAMPION: "1"}


def test_corrupt_model_is_never_registered(registry: Registry, name: str, tmp_path: Path) -> None:
    folder = saved_model(tmp_path / "m")
    (folder / WEIGHTS_FILE).write_bytes(b"garbage")
    with pytest.raises(ModelFormatError):
        registry.register(name, folder)
    with pytest.raises(NotFoundError):
        registry.aliases(name)


def _rollback_in_process(uri: str, home: str, name: str, barrier: object) -> str:
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["PRUNEOPS_HOME"] = home
    registry = Registry()
    barrier.wait()  # type: ignore[attr-defined]
    change = registry.rollback(name, why="concurrent")
    return f"{change.changed}:{change.version}"


def test_concurrent_rollbacks_end_consistent(
    registry: Registry, name: str, tmp_path: Path, backend: str, isolated_state: Path
) -> None:
    v1, v2 = (register(registry, name, tmp_path, seed) for seed in range(2))
    registry.set_alias(name, CHAMPION, v1)
    registry.set_alias(name, CHALLENGER, v2)
    registry.promote(name)
    workers = 4
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(workers)
    with context.Pool(workers) as pool:
        results = pool.starmap(_rollback_in_process, [(backend, str(isolated_state), name, barrier)] * workers)
    # Every process succeeds and agrees on the outcome; the registry holds one consistent state.
    assert all(r.endswith(f":{v1}") for r in results), results
    assert any(r.startswith("True") for r in results)
    assert registry.aliases(name) == {CHAMPION: v1}
    assert registry.version(name, v2).tag("rolled_back_at")
    rollbacks = [e for e in registry.history(name) if e.action == "rollback" and e.alias == CHAMPION]
    if backend.startswith("sqlite"):
        assert results.count(f"True:{v1}") == 1 and len(rollbacks) == 1  # serialised by the file lock
    assert {e.version for e in rollbacks} == {v1}


@pytest.mark.unit
def test_unreachable_server_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    registry = Registry()  # no I/O until it is used
    with pytest.raises(RegistryError, match="cannot reach the MLflow tracking server"):
        registry.aliases("digits")


def test_default_store_is_sqlite_in_state_dir(isolated_state: Path, tmp_path: Path) -> None:
    registry = Registry()
    assert registry.tracking_uri == f"sqlite:///{isolated_state / 'mlflow.db'}"
    register(registry, "local", tmp_path)
    assert (isolated_state / "mlflow.db").is_file()
    assert any((isolated_state / "artifacts").rglob(WEIGHTS_FILE))
