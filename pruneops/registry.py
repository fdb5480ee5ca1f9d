"""The registry client: the only module in pruneops that talks to MLflow.

Every model version carries its model folder (``model/``: ``arch.json`` +
``model.safetensors``, later ``model.onnx``), its reference feature sample for drift
(``reference/reference.parquet``) and its evaluation report (``report/evaluation.json``),
plus lineage tags prefixed ``pruneops.``. Aliases say what serves: ``champion``,
``challenger`` and ``previous`` (the rollback target).

Alias changes are idempotent: each re-reads the aliases and does nothing when the registry is
already in the asked-for state, so calling ``rollback`` twice, or from two processes at
once, leaves one consistent state. On a local SQLite store the change runs under a file lock;
on a remote ``mlflow server`` the server serialises the individual writes. Which moves an
operation makes is decided by the pure functions of :mod:`pruneops.aliases`; this class reads
the state, records the operation and applies the moves.

Every operation is recorded (who, when, why) as one run of the ``pruneops-audit`` experiment,
tagged with its model (:mod:`pruneops.audit`): the trail grows there, searchable by model,
and never weighs on reading the aliases. The record is written before the moves and finished
after them, so a process killed in between leaves a RUNNING record that the next alias
operation completes: a move and its record are never separated. A change made elsewhere (a
click in the MLflow UI, a script on MLflow's API) is found by :meth:`Registry.reconcile`,
which compares the aliases with the state the last record leaves and records each difference
as an ``outside`` operation; every alias change of pruneops and each controller poll reconcile
first, so ``rollback`` after a UI change goes back to what served before it. Registries from
before the audit experiment keep their events as ``pruneops.event.*`` model tags, still read.

The constructor does no network I/O (only a SQLite store's folder is made): the first call
checks a remote server is reachable.

>>> import os, tempfile
>>> os.environ["MLFLOW_TRACKING_URI"] = "sqlite:///" + tempfile.mkdtemp() + "/mlflow.db"
>>> registry = Registry()
>>> registry.aliases("no-such-model")
Traceback (most recent call last):
...
pruneops.errors.NotFoundError: model 'no-such-model' is not registered
>>> del os.environ["MLFLOW_TRACKING_URI"]
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
from pydantic import BaseModel

from pruneops import settings
from pruneops.aliases import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS,
    Move,
    Plan,
    after,
    plan_promote,
    plan_reconcile,
    plan_remove,
    plan_rollback,
    plan_set,
    still_to_apply,
)
from pruneops.audit import AT, AUDIT_EXPERIMENT, MODEL, AliasEvent, Operation, recorded_aliases
from pruneops.errors import ModelFormatError, NotFoundError, RegistryError
from pruneops.filelock import file_lock
from pruneops.integrity import digest_tags, file_digests, recorded_digests, verify_folder
from pruneops.layout import (  # the artifact layout of a version (older callers import it from here)
    MODEL_DIR,
    REFERENCE_DIR,
    REFERENCE_FILE,
    REPORT_DIR,
    REPORT_FILE,
    REPORT_HTML,
    stage_version,
    write_reference,
)

TAG_PREFIX = "pruneops."
EVENT_PREFIX = "pruneops.event."
#: The action of an alias change found in the registry that pruneops did not make.
OUTSIDE = "outside"
EXPERIMENT = "pruneops"
#: Run tags of a registration in progress: its key, its model and the process doing it.
REGISTRATION_KEY, REGISTRATION_MODEL, REGISTRATION_OWNER = (
    "pruneops.registration.key",
    "pruneops.registration.model",
    "pruneops.registration.owner",
)
#: MLflow's error codes for an alias that is not set: a server's, and SQLite's.
_ALIAS_NOT_FOUND = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
#: Attempts to read the aliases and the last record without another operation in between.
RECONCILE_ATTEMPTS = 5
#: A registration run still RUNNING this long after it started is abandoned, whoever owned it.
STALE_REGISTRATION_S = 3600.0


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version as pruneops sees it."""

    name: str
    version: str
    aliases: tuple[str, ...]
    tags: dict[str, str]
    run_id: str | None
    source: str
    created_at: datetime

    def tag(self, key: str, default: str | None = None) -> str | None:
        """A ``pruneops.`` tag by its short name: ``info.tag("gate")``."""
        return self.tags.get(TAG_PREFIX + key, default)

    def short_tags(self) -> dict[str, str]:
        """Every ``pruneops.`` tag by its short name, as :meth:`Registry.register` takes them.

        >>> tags = {"pruneops.gate": "passed", "mlflow.source": "x"}
        >>> VersionInfo("m", "1", (), tags, None, "", datetime.now()).short_tags()
        {'gate': 'passed'}
        """
        return {k.removeprefix(TAG_PREFIX): v for k, v in self.tags.items() if k.startswith(TAG_PREFIX)}


@dataclass(frozen=True)
class AliasChange:
    """What an alias operation did; ``changed`` is False when the state was already right."""

    action: str
    model: str
    version: str | None
    from_version: str | None
    changed: bool
    message: str
    events: list[AliasEvent] = field(default_factory=list)


class Registry:
    """MLflow model registry client with pruneops's lineage, aliases and audit trail.

    ``tracking_uri`` defaults to :func:`pruneops.settings.tracking_uri` (SQLite in the state
    folder unless ``MLFLOW_TRACKING_URI`` is set).
    """

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri or settings.tracking_uri()
        if self.tracking_uri.startswith("sqlite:///"):  # local folders only: the alias lock lives there too
            Path(self.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self._mlflow: Any = None
        self._audit_experiment: str | None = None

    @property
    def _client(self) -> Any:
        """MLflow's client, made on first use (after checking a remote server answers)."""
        if self._mlflow is None:
            from mlflow import MlflowClient

            self._check_reachable()
            self._mlflow = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._mlflow

    # ------------------------------------------------------------------ reading

    def version(self, name: str, version: str | int) -> VersionInfo:
        """One version by number; :class:`NotFoundError` if the model or version is unknown."""
        self._require_model(name)
        with self._mlflow_errors(f"version {version} of model {name!r}"):
            return self._info(self._client.get_model_version(name, str(version)))

    def alias(self, name: str, alias: str) -> VersionInfo:
        """The version an alias points at; :class:`NotFoundError` if the alias is not set."""
        current = self.aliases(name)
        if alias not in current:
            known = ", ".join(f"{a}=v{v}" for a, v in sorted(current.items())) or "none"
            raise NotFoundError(f"model {name!r} has no alias {alias!r} (aliases: {known})")
        return self.version(name, current[alias])

    def resolve(self, name: str, ref: str | int) -> VersionInfo:
        """A version from ``"3"``, ``3``, ``"v3"`` or an alias name such as ``"champion"``."""
        text = str(ref)
        if text.removeprefix("v").isdigit():
            return self.version(name, text.removeprefix("v"))
        return self.alias(name, text)

    def aliases(self, name: str) -> dict[str, str]:
        """Alias → version number for one model (one read of the registered model)."""
        return _alias_map(self._require_model(name))

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version number ``alias`` points at, or ``None`` when it is not set: what a server polls.

        One read of that alias's version, whose size does not grow with the model's history.
        :class:`NotFoundError` when the model is not registered.
        """
        from mlflow.exceptions import MlflowException

        try:
            return str(self._client.get_model_version_by_alias(name, alias).version)
        except MlflowException as err:
            if err.error_code not in _ALIAS_NOT_FOUND:
                raise RegistryError(f"registry error reading alias {alias} of {name!r}: {err.message}") from None
        self._require_model(name)  # tells an unknown model from an unset alias
        return None

    def versions(self, name: str) -> list[VersionInfo]:
        """Every version of a model, oldest first."""
        by_version: dict[str, list[str]] = {}
        for alias, number in self.aliases(name).items():
            by_version.setdefault(number, []).append(alias)
        with self._mlflow_errors(f"versions of {name!r}"):
            found = self._client.search_model_versions(f"name = '{_quoted(name)}'")
        # search results carry no aliases, so they come from the model's alias map.
        infos = [replace(self._info(v), aliases=tuple(sorted(by_version.get(str(v.version), [])))) for v in found]
        return sorted(infos, key=lambda v: int(v.version))

    def history(self, name: str) -> list[AliasEvent]:
        """Every recorded alias change of a model, oldest first (:meth:`reconcile` first to
        include changes made outside pruneops)."""
        legacy = _legacy_events(self._require_model(name))
        recorded = [event for _, _, op in self._operations(name) for event in op.events()]
        return sorted(legacy, key=lambda e: e.at) + recorded

    def reconcile(self, name: str) -> list[AliasEvent]:
        """Record the alias changes made outside pruneops since the last recorded event.

        Each alias whose version differs from what the recorded events leave gets an
        ``outside`` event (from the recorded version to the one found). When the champion was
        moved outside, ``previous`` is pointed at the champion it replaced, as ``promote``
        would have done, so ``rollback`` returns to it. Returns the events written (none
        when the registry and the record agree).
        """
        with self._alias_lock():
            return self._reconcile(name)[0]

    def sync(self, name: str) -> tuple[list[AliasEvent], dict[str, str]]:
        """:meth:`reconcile`, and the aliases as they stand after it: a controller's poll, in as few reads.

        Two reads of the audit trail's last record around one read of the registered model
        when nothing changed.
        """
        with self._alias_lock():
            return self._reconcile(name)

    def download(self, name: str, ref: str | int, dest: str | Path, part: str = MODEL_DIR, verify: bool = True) -> Path:
        """Download a version's ``model``, ``reference`` or ``report`` folder into ``dest``.

        ``model`` and ``reference`` are checked file by file against the sha256 digests recorded
        at registration (:mod:`pruneops.integrity`) before anything reads them; a mismatch, a
        missing or an added file raises :class:`IntegrityError`. ``verify=False`` is for
        source versions registered outside pruneops, which carry no digests.
        """
        import mlflow

        info = self.resolve(name, ref)
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        uri = self._artifact_root(info) if part == MODEL_DIR else f"runs:/{info.run_id}/{part}"
        with self._mlflow_errors(f"{part} of {name} v{info.version}"):
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=str(dest), tracking_uri=self.tracking_uri
            )
        if verify and part in (MODEL_DIR, REFERENCE_DIR):
            verify_folder(local, part, info.tags, what=f"{name} v{info.version}")
        return Path(local)

    def download_source(self, name: str, ref: str | int, dest: str | Path) -> Path:
        """Download a version to prune or import: checked against its digests when it has them.

        A team's own version (``mlflow.pytorch.log_model``) carries none; the loaders that
        read it (:mod:`pruneops.sources`) check its files instead.
        """
        info = self.resolve(name, ref)
        return self.download(name, info.version, dest, verify=bool(recorded_digests(info.tags, MODEL_DIR)))

    def download_uri(self, uri: str, dest: str | Path) -> Path:
        """Download an MLflow model URI (``models:/NAME/3``, ``models:/NAME@alias``, ``runs:/ID/model``) to ``dest``.

        A registered version's files are checked against its digests when it has them.
        """
        import mlflow

        if uri.startswith("models:/") and not uri.startswith("models:/m-"):
            name, _, ref = uri.removeprefix("models:/").rstrip("/").replace("@", "/").rpartition("/")
            return self.download_source(name, ref, dest)
        with self._mlflow_errors(uri):
            return Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=uri, dst_path=str(dest), tracking_uri=self.tracking_uri
                )
            )

    def model_files(self, name: str, ref: str | int, depth: int = 2) -> list[str]:
        """The paths of a version's model files (``data/model.pt2``), listed without downloading them."""
        import mlflow

        info = self.resolve(name, ref)
        found: list[str] = []

        def walk(uri: str, prefix: str, level: int) -> None:
            for entry in mlflow.artifacts.list_artifacts(artifact_uri=uri, tracking_uri=self.tracking_uri):
                leaf = entry.path.rsplit("/", 1)[-1]
                if entry.is_dir and level < depth:
                    walk(f"{uri}/{leaf}", f"{prefix}{leaf}/", level + 1)
                elif not entry.is_dir:
                    found.append(prefix + leaf)

        with self._mlflow_errors(f"files of {name} v{info.version}"):
            walk(self._artifact_root(info), "", 1)
        return found

    def artifact_location(self, name: str, ref: str | int) -> str:
        """Where a version's model files are stored (a logged model's ``artifact_location``, or a run folder)."""
        return self._artifact_root(self.resolve(name, ref))

    def _artifact_root(self, info: VersionInfo) -> str:
        """Where a version's files are: MLflow 3 sources ``models:/m-<id>`` resolve to the logged model's location."""
        if info.source.startswith("models:/m-"):
            return str(self._client.get_logged_model(info.source.removeprefix("models:/")).artifact_location)
        return info.source

    def read_file(self, name: str, ref: str | int, path: str, limit: int = 1 << 20) -> str:
        """One small text file of a version's model folder (its ``MLmodel``), at most ``limit`` bytes."""
        import mlflow

        info = self.resolve(name, ref)
        with tempfile.TemporaryDirectory() as tmp, self._mlflow_errors(f"{path} of {name} v{info.version}"):
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"{self._artifact_root(info)}/{path}", dst_path=tmp, tracking_uri=self.tracking_uri
                )
            )
            if local.stat().st_size > limit:
                raise ModelFormatError(f"{path} of {name} v{info.version} is over {limit} bytes")
            return local.read_text()

    def load_model(self, name: str, ref: str | int = CHAMPION) -> Any:
        """Download and rebuild a version's torch model (no pickle involved)."""
        from pruneops.modelio import load_model

        with tempfile.TemporaryDirectory() as tmp:
            return load_model(self.download(name, ref, tmp))

    def load_reference(self, name: str, ref: str | int = CHAMPION) -> Any:
        """A version's reference feature sample, as a pandas DataFrame."""
        import pandas as pd

        with tempfile.TemporaryDirectory() as tmp:
            folder = self.download(name, ref, tmp, part=REFERENCE_DIR)
            return pd.read_parquet(folder / REFERENCE_FILE)

    # ------------------------------------------------------------------ writing

    def register(
        self,
        name: str,
        model_dir: str | Path,
        *,
        tags: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        reference: np.ndarray | None = None,
        feature_names: list[str] | None = None,
        report: Mapping[str, Any] | BaseModel | None = None,
        extra_artifacts: Mapping[str, str | Path] | None = None,
        key: str | None = None,
        params: Mapping[str, Any] | None = None,
        step_metrics: Mapping[str, Sequence[float]] | None = None,
    ) -> VersionInfo:
        """Register a saved model folder as a new version, with lineage and evidence.

        Before anything is written the folder must prove itself (:func:`pruneops.modelio.verify_saved`):
        it loads, its weights are finite, and it reproduces the outputs its probe recorded
        in memory; so must its ONNX file (exported here when the folder has none). The
        version is an MLflow model: an ``MLmodel`` (:mod:`pruneops.mlmodel`) is written
        beside the pruneops files, so plain ``mlflow.pyfunc.load_model`` runs it.

        Lineage in MLflow's own terms: ``params`` (the recipe, flattened, and where the model
        came from) are logged on the run; ``step_metrics`` (``{"finetune_train_loss": [...]}``)
        are logged with their step index, so the MLflow UI draws them; and an MLflow 3 logged
        model (type ``pruneops``, with the params) is created from the run: the version's files
        are its artifacts and the version is registered from it (``models:/<model_id>``), so
        the UI links run, logged model and version.

        Tags are given without the ``pruneops.`` prefix and set in the same call that
        creates the version, together with the sha256 of every file uploaded, so a version
        never exists without its lineage and digests.

        Crash safety: ``key`` names one logical registration (the pipeline passes its run
        id). Calling again with the same key after a crash, at any line, returns the version
        that call created, or finishes the work; no run is left RUNNING. Without a key, each
        call also cleans up registrations whose process died. If a step fails, no version is
        created and a model created by this call is removed.
        """
        experiment_id = self._experiment_id()
        with tempfile.TemporaryDirectory() as tmp:
            runtime = (tags or {}).get("runtime")
            model_dir = stage_version(Path(model_dir), Path(tmp) / MODEL_DIR, runtime)  # refuse what would not serve
            reference_dir = write_reference(Path(tmp) / REFERENCE_DIR, reference, feature_names)
            digests = file_digests(model_dir, MODEL_DIR)
            if reference_dir is not None:
                digests |= file_digests(reference_dir, REFERENCE_DIR)
            full_tags = {TAG_PREFIX + k: str(v) for k, v in (tags or {}).items() if v is not None}
            full_tags |= {TAG_PREFIX + k: v for k, v in digest_tags(digests).items()}
            with self._mlflow_errors(f"registering {name!r}"):
                finished = self._recover_registrations(experiment_id, name, key)
            if finished is not None:
                return finished
            created_model, run_id, model_id = False, None, None
            try:
                with self._mlflow_errors(f"registering {name!r}"):
                    run_tags = full_tags | {REGISTRATION_MODEL: name, REGISTRATION_OWNER: _owner()}
                    if key:
                        run_tags[REGISTRATION_KEY] = key
                    run = self._client.create_run(experiment_id, run_name=f"{name}-register", tags=run_tags)
                    run_id = run.info.run_id
                    self._log_evidence(run_id, metrics, reference_dir, report, extra_artifacts)
                    logged = self._log_lineage(experiment_id, run_id, name, params, step_metrics)
                    model_id = str(logged.model_id)
                    self._client.log_model_artifacts(model_id, str(model_dir))
                    self._client.finalize_logged_model(model_id, "READY")
                    if self._find_model(name) is None:
                        self._client.create_registered_model(name, description="managed by pruneops")
                        created_model = True
                    version = self._client.create_model_version(
                        name, source=self._version_source(logged), run_id=run_id, tags=full_tags, model_id=model_id
                    )
                    self._link_logged_model(name, str(version.version), model_id)
                    self._client.set_terminated(run_id, "FINISHED")
                    return self._info(version)
            except BaseException:
                with contextlib.suppress(Exception):
                    if run_id:
                        self._client.set_terminated(run_id, "FAILED")
                    if model_id:
                        self._client.finalize_logged_model(model_id, "FAILED")
                    if created_model:
                        self._client.delete_registered_model(name)
                raise

    def _recover_registrations(self, experiment_id: str, name: str, key: str | None) -> VersionInfo | None:
        """Finish or fail registrations of ``name`` left RUNNING by a dead process.

        Returns the version an earlier call with the same ``key`` created, if there is one.
        """
        mine: VersionInfo | None = None
        if key:
            done = self._client.search_runs(
                [experiment_id],
                filter_string=f"tags.`{REGISTRATION_KEY}` = '{_quoted(key)}' and attributes.status = 'FINISHED'",
            )
            for run in done:
                mine = mine or self._version_of_run(name, run.info.run_id)
        running = self._client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{REGISTRATION_MODEL}` = '{_quoted(name)}' and attributes.status = 'RUNNING'",
        )
        for run in running:
            same_key = bool(key) and run.data.tags.get(REGISTRATION_KEY) == key
            if not same_key and not _abandoned(run.data.tags.get(REGISTRATION_OWNER, ""), run.info.start_time):
                continue  # another registration, still under way
            version = self._version_of_run(name, run.info.run_id)
            for logged in self._client.search_logged_models(
                [experiment_id], filter_string=f"source_run_id = '{_quoted(run.info.run_id)}'"
            ):
                if version is not None:
                    self._link_logged_model(name, version.version, logged.model_id)
                elif str(logged.status) != "FAILED":
                    self._client.finalize_logged_model(logged.model_id, "FAILED")
            self._client.set_terminated(run.info.run_id, "FINISHED" if version else "FAILED")
            if same_key and version is not None:
                mine = version
        return mine

    def _version_source(self, logged: Any) -> str:
        """A version's source for its logged model: ``models:/<id>`` on a server, the folder itself on a local store.

        MLflow's local registry store resolves ``models:/<id>`` through the process-wide
        tracking URI, not this client's (a TODO in MLflow), so it is given the location.
        """
        if self.tracking_uri.startswith(("http://", "https://")):
            return f"models:/{logged.model_id}"
        return str(logged.artifact_location)

    def _link_logged_model(self, name: str, version: str, model_id: str) -> None:
        """Tag the logged model with its version, as MLflow's ``register_model`` does (the UI reads it)."""
        from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

        self._client.set_logged_model_tags(
            model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([{"name": name, "version": version}])}
        )

    def _version_of_run(self, name: str, run_id: str) -> VersionInfo | None:
        found = self._client.search_model_versions(f"name = '{_quoted(name)}' and run_id = '{_quoted(run_id)}'")
        return self.version(name, found[0].version) if found else None

    def log_files(self, run_name: str, files: Mapping[str, str | Path]) -> str:
        """Log files (``{artifact folder: local file}``) to a new finished run; return its id.

        For what versions refer to but do not contain, such as a data-file task's data.
        """
        experiment_id = self._experiment_id()
        with self._mlflow_errors(f"logging {run_name}"):
            run_id = str(self._client.create_run(experiment_id, run_name=run_name).info.run_id)
            for artifact_path, local in files.items():
                self._client.log_artifact(run_id, str(local), artifact_path)
            self._client.set_terminated(run_id, "FINISHED")
        return run_id

    def report_location(self, info: VersionInfo) -> str | None:
        """Where a person opens a version's HTML report: its page in the MLflow UI on a tracking
        server, the file itself on a local store; None when the run logged no report.

        Usage::

            Registry().report_location(Registry().version("digits", "2"))
        """
        if not info.run_id:
            return None
        with self._mlflow_errors(f"report of {info.name} v{info.version}"):
            run = self._client.get_run(info.run_id)
            logged = {item.path for item in self._client.list_artifacts(info.run_id, REPORT_DIR)}
        if REPORT_HTML not in logged:
            return None
        if self.tracking_uri.startswith(("http://", "https://")):
            experiment = run.info.experiment_id
            return (
                f"{self.tracking_uri.rstrip('/')}/#/experiments/{experiment}/runs/{info.run_id}/artifacts/{REPORT_HTML}"
            )
        root = run.info.artifact_uri or ""
        if root.startswith("file:"):
            return str(Path(urlparse(root).path) / REPORT_HTML)
        return f"{root.rstrip('/')}/{REPORT_HTML}"

    def has_model(self, name: str) -> bool:
        """Whether a registered model of this name exists."""
        return self._find_model(name) is not None

    def set_tags(self, name: str, version: str | int, tags: Mapping[str, Any]) -> None:
        """Set ``pruneops.`` tags on an existing version."""
        self.version(name, version)
        with self._mlflow_errors(f"tagging {name} v{version}"):
            for key, value in tags.items():
                _retry_conflict(self._client.set_model_version_tag, name, str(version), TAG_PREFIX + key, str(value))

    def delete_tags(self, name: str, version: str | int, keys: Sequence[str]) -> None:
        """Remove ``pruneops.`` tags from a version; a tag that is not there is no error."""
        info = self.version(name, version)
        with self._mlflow_errors(f"untagging {name} v{version}"):
            for key in keys:
                if TAG_PREFIX + key in info.tags:
                    self._client.delete_model_version_tag(name, info.version, TAG_PREFIX + key)

    def set_alias(self, name: str, alias: str, version: str | int, why: str = "") -> AliasChange:
        """Point ``alias`` at ``version`` (idempotent) and record it.

        Only versions whose gate passed may hold an alias.
        """
        with self._alias_lock():
            state = self._reconciled(name)
            info = self.version(name, version)
            self._require_gate(info)
            return self._carry_out(name, state, plan_set(state, alias, info.version), why)

    def remove_alias(self, name: str, alias: str, why: str = "") -> AliasChange:
        """Delete an alias (idempotent) and record it; e.g. withdraw a rejected challenger."""
        with self._alias_lock():
            state = self._reconciled(name)
            return self._carry_out(name, state, plan_remove(state, alias), why)

    def promote(self, name: str, version: str | int | None = None, why: str = "") -> AliasChange:
        """Make ``version`` (default: the challenger) the champion; the old champion becomes previous.

        Idempotent: promoting the version that already is champion changes nothing.
        """
        with self._alias_lock():
            state = self._reconciled(name)
            if version is None:
                if CHALLENGER not in state:
                    raise NotFoundError(f"model {name!r} has no challenger to promote; pass a version")
                version = state[CHALLENGER]
            info = self.version(name, version)
            self._require_gate(info)
            change = self._carry_out(name, state, plan_promote(state, info.version), why)
            if change.changed:
                self.set_tags(name, info.version, {"promoted_at": _now()})
            return change

    def rollback(self, name: str, to: str | int | None = None, why: str = "") -> AliasChange:
        """Make ``to`` (default: the ``previous`` alias) the champion again.

        The rolled-back version is tagged ``rolled_back_at`` and ``rollback_reason``, and the
        ``previous`` alias is consumed. Idempotent: a second rollback, or one racing another,
        finds the champion already rolled back and changes nothing.
        """
        with self._alias_lock():
            state = self._reconciled(name)
            last = None
            if to is None and PREVIOUS not in state:  # is it rolled back already? (reads the history)
                champion_events = [e for e in self.history(name) if e.alias == CHAMPION]
                last = (champion_events[-1].action, champion_events[-1].version) if champion_events else None
            try:
                plan = plan_rollback(state, None if to is None else str(to), last)
            except NotFoundError as err:
                raise NotFoundError(f"model {name!r} has {err}") from None
            if plan.moves:
                self._require_gate(self.version(name, str(plan.version)))
            change = self._carry_out(name, state, plan, why)
            if change.changed and plan.from_version is not None:
                reason = why or "manual rollback"
                self.set_tags(name, plan.from_version, {"rolled_back_at": _now(), "rollback_reason": reason})
            return change

    def create_webhook(self, name: str, url: str, events: list[str], secret: str) -> str:
        """Register an MLflow webhook (needs a SQL-backed server), or update the one of that name; returns its id.

        Idempotent by name: running it again (a redeploy, a rotated secret) updates the
        webhook instead of adding a second one that would deliver every event twice.
        MLflow refuses ``http://`` targets unless the server runs with
        ``MLFLOW_WEBHOOK_ALLOWED_SCHEMES=http,https`` (and loopback ones without
        ``MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS=true``).
        """
        with self._mlflow_errors(f"creating webhook {name!r}"):
            existing = [hook for hook in self._all_webhooks() if hook.name == name]
            if existing:
                webhook = self._client.update_webhook(existing[0].webhook_id, url=url, events=events, secret=secret)
            else:
                webhook = self._client.create_webhook(name=name, url=url, events=events, secret=secret)
        return str(webhook.webhook_id)

    def _all_webhooks(self) -> list[Any]:
        found: list[Any] = []
        token = None
        while True:
            page = self._client.list_webhooks(max_results=100, page_token=token)
            found.extend(page)
            token = page.token
            if not token:
                return found

    # ------------------------------------------------------------------ internals

    def _carry_out(self, name: str, state: dict[str, str], plan: Plan, why: str) -> AliasChange:
        """Record ``plan``'s moves, apply them, and say what changed."""
        events = self._apply(name, plan.action, plan.moves, state, why)
        return AliasChange(plan.action, name, plan.version, plan.from_version, bool(events), plan.message, events)

    def _apply(self, name: str, action: str, moves: list[Move], state: dict[str, str], why: str) -> list[AliasEvent]:
        """Record the operation (RUNNING), apply its moves, finish the record. A crash in between is
        completed by the next :meth:`_reconciled` (:func:`pruneops.aliases.still_to_apply`)."""
        if not moves:
            return []
        operation = Operation(_now(), name, action, settings.actor(), why, list(moves), after(state, moves))
        run_id = self._begin(operation)
        self._set_aliases(name, moves)
        self._finish(run_id)
        return operation.events()

    def _set_aliases(self, name: str, moves: list[Move]) -> None:
        from mlflow.exceptions import MlflowException

        with self._mlflow_errors(f"moving aliases of {name!r}"):
            for move in moves:
                if move.version is None:
                    try:
                        self._client.delete_registered_model_alias(name, move.alias)
                    except MlflowException as err:  # already gone: the move is done; anything else is not
                        if err.error_code not in _ALIAS_NOT_FOUND:
                            raise
                else:
                    _retry_conflict(self._client.set_registered_model_alias, name, move.alias, move.version)

    def _begin(self, operation: Operation, finished: bool = False) -> str:
        """Write an operation's audit run (RUNNING unless ``finished``); returns the run id."""
        with self._mlflow_errors(f"recording an alias change of {operation.model!r}"):
            run = self._client.create_run(self._audit_experiment_id(), tags=operation.tags(),
                                          run_name=f"{operation.model}: {operation.action}")  # fmt: skip
            if finished:
                self._client.update_run(run.info.run_id, status="FINISHED")
        return str(run.info.run_id)

    def _finish(self, run_id: str) -> None:
        # update_run, not set_terminated: that one prints the run's URL to stdout on a server.
        with self._mlflow_errors("finishing an alias change's record"):
            self._client.update_run(run_id, status="FINISHED")

    def _operations(self, name: str, newest: int | None = None) -> list[tuple[str, str, Operation]]:
        """(run id, status, operation) of the model's audit runs, oldest first; only the ``newest`` N if given."""
        from mlflow.entities import ViewType

        found: list[Any] = []
        token = None
        with self._mlflow_errors(f"reading the audit trail of {name!r}"):
            while True:
                page = self._client.search_runs(
                    [self._audit_experiment_id()], f"tags.`{MODEL}` = '{_quoted(name)}'", ViewType.ACTIVE_ONLY,
                    max_results=newest or 1000, order_by=[f"tags.`{AT}` DESC"], page_token=token,
                )  # fmt: skip
                found.extend(page)
                token = page.token
                if newest is not None or not token:
                    break
        runs = [(run.info.run_id, run.info.status, Operation.from_tags(run.data.tags)) for run in found]
        return sorted(runs, key=lambda r: r[2].at)

    def _reconciled(self, name: str) -> dict[str, str]:
        """:meth:`reconcile` for a caller that holds the alias lock; returns the aliases after it."""
        return self._reconcile(name)[1]

    def _reconcile(self, name: str) -> tuple[list[AliasEvent], dict[str, str]]:
        """Complete a crashed operation, then record and repair changes made outside pruneops.

        Reads the last record, then the aliases, then the last record again: an operation that
        another process recorded in between is read again rather than called outside.
        """
        events: list[AliasEvent] = []
        for _ in range(RECONCILE_ATTEMPTS):
            last = self._operations(name, newest=1)
            model = self._require_model(name)
            found = _alias_map(model)
            if last and last[-1][1] == "RUNNING":  # recorded, maybe not applied: finish it
                run_id, _, operation = last[-1]
                self._set_aliases(name, still_to_apply(found, operation.moves))
                self._finish(run_id)
                continue
            recorded = last[-1][2].aliases if last else recorded_aliases(_legacy_events(model))
            if found == recorded:
                return events, found
            if self._operations(name, newest=1) != last:
                continue  # another operation landed between the reads
            outside, repair = plan_reconcile(found, recorded)
            who, why = "MLflow UI or API", f"not made by pruneops; found in the registry by {settings.actor()}"
            operation = Operation(_now(), name, OUTSIDE, who, why, outside, dict(found))
            self._begin(operation, finished=True)
            events += operation.events()
            if repair:
                why = f"champion v{recorded.get(CHAMPION)} was replaced outside pruneops; it is the rollback target"
                events += self._apply(name, "reconcile", repair, found, why)
            return events, after(found, repair)
        raise RegistryError(f"the aliases of {name!r} kept changing while being read; try again")

    def _require_gate(self, info: VersionInfo) -> None:
        if info.tag("gate") == "failed":
            raise RegistryError(f"{info.name} v{info.version} failed its gate and may not hold an alias")

    def _require_model(self, name: str) -> Any:
        model = self._find_model(name)
        if model is None:
            raise NotFoundError(f"model {name!r} is not registered")
        return model

    def _find_model(self, name: str) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_registered_model(name)
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise RegistryError(f"registry error reading model {name!r}: {err.message}") from None

    def _audit_experiment_id(self) -> str:
        if self._audit_experiment is None:
            self._audit_experiment = self._experiment_id(AUDIT_EXPERIMENT)
        return self._audit_experiment

    def _experiment_id(self, experiment: str = EXPERIMENT) -> str:
        found = self._client.get_experiment_by_name(experiment)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.tracking_uri.startswith("sqlite:"):
            # SQLite stores put artifacts under ./mlruns of whatever the working folder is;
            # keep them beside the database instead.
            db = Path(self.tracking_uri.removeprefix("sqlite:///"))
            location = (db.parent / "artifacts").as_uri()
        try:
            return str(self._client.create_experiment(experiment, artifact_location=location))
        except Exception:  # another process created it first
            found = self._client.get_experiment_by_name(experiment)
            if found is None:
                raise
            return str(found.experiment_id)

    def _log_evidence(
        self,
        run_id: str,
        metrics: Mapping[str, float] | None,
        reference_dir: Path | None,
        report: Mapping[str, Any] | BaseModel | None,
        extra_artifacts: Mapping[str, str | Path] | None,
    ) -> None:
        for key, value in (metrics or {}).items():
            self._client.log_metric(run_id, key, float(value))
        if reference_dir is not None:
            self._client.log_artifacts(run_id, str(reference_dir), REFERENCE_DIR)
        if report is not None:
            with tempfile.TemporaryDirectory() as tmp:
                text = (
                    report.model_dump_json(indent=2)  # typed evidence: its one serialisation
                    if isinstance(report, BaseModel)
                    else json.dumps(report, indent=2, sort_keys=True, default=str)
                )
                (Path(tmp) / REPORT_FILE).write_text(text)
                self._client.log_artifact(run_id, str(Path(tmp) / REPORT_FILE), REPORT_DIR)
        for artifact_path, local in (extra_artifacts or {}).items():
            self._client.log_artifact(run_id, str(local), artifact_path)

    def _log_lineage(
        self,
        experiment_id: str,
        run_id: str,
        name: str,
        params: Mapping[str, Any] | None,
        step_metrics: Mapping[str, Sequence[float]] | None,
    ) -> Any:
        """Params and per-step metrics on the run, and the MLflow 3 logged model made from it (returned).

        The version's files are then logged into that logged model and the version is made
        from it (``model_id``), as ``mlflow.<flavor>.log_model(..., registered_model_name=...)``
        does: the MLflow UI links version, logged model and run.
        Versions registered before this keep their files in the run (``model/``), which
        :meth:`_artifact_root` still resolves.
        """
        from mlflow.entities import Metric, Param

        text = {key: str(value)[:6000] for key, value in (params or {}).items() if value is not None}
        now = int(time.time() * 1000)
        series = [
            Metric(key, float(value), now, step)
            for key, values in (step_metrics or {}).items()
            for step, value in enumerate(values)
        ]
        params_list = [Param(key, value) for key, value in text.items()]
        for start in range(0, max(len(params_list), len(series)), 100):  # MLflow's batch limits
            self._client.log_batch(run_id, metrics=series[start : start + 100], params=params_list[start : start + 100])
        logged = self._client.create_logged_model(
            experiment_id, name=name, source_run_id=run_id, params=text, model_type="pruneops"
        )
        return logged

    def _info(self, mv: Any) -> VersionInfo:
        return VersionInfo(
            name=mv.name,
            version=str(mv.version),
            aliases=tuple(mv.aliases or ()),
            tags=dict(mv.tags or {}),
            run_id=mv.run_id,
            source=mv.source,
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
        )

    @contextlib.contextmanager
    def _alias_lock(self) -> Iterator[None]:
        """Serialise alias changes of processes sharing a local SQLite store."""
        if not self.tracking_uri.startswith("sqlite:///"):
            yield
            return
        with file_lock(self.tracking_uri.removeprefix("sqlite:///") + ".alias.lock"):
            yield

    @contextlib.contextmanager
    def _mlflow_errors(self, what: str) -> Iterator[None]:
        """Turn MLflow's exceptions into pruneops errors with one readable line."""
        from mlflow.exceptions import MlflowException

        try:
            yield
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise NotFoundError(f"{what}: not found") from None
            raise RegistryError(f"{what}: {err.message.splitlines()[0]}") from None
        except ModelFormatError:
            raise
        except OSError as err:
            raise RegistryError(f"{what}: {err}") from None

    def _check_reachable(self) -> None:
        """A remote server that is down gives one clear line at once, not minutes of retries."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(self.tracking_uri.rstrip("/") + "/health", timeout=5) as reply:
                reply.read()
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise RegistryError(f"cannot reach the MLflow tracking server at {self.tracking_uri}: {reason}") from None


def _retry_conflict(write: Any, *args: Any, attempts: int = 4) -> None:
    """Run an idempotent registry write, retrying when a concurrent writer won the race.

    MLflow's server sets a tag or alias by reading then inserting; two processes writing the
    same key at once make the second insert fail on the unique constraint. The value is the
    same either way, so writing again (now an update) is correct.
    """
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            write(*args)
            return
        except MlflowException as err:
            conflict = "UNIQUE constraint" in err.message or "IntegrityError" in err.message
            if not conflict or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _owner() -> str:
    """Who runs a registration: ``host:pid``, so a later call can tell whether it died."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _abandoned(owner: str, start_time_ms: int | None) -> bool:
    """Whether a RUNNING registration's process is gone: dead on this host, or silent for too long."""
    if start_time_ms is not None and time.time() - start_time_ms / 1000 > STALE_REGISTRATION_S:
        return True
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, owned by another user
    return False


def _quoted(value: str) -> str:
    """A value for a single-quoted MLflow search filter; quotes would change the filter, so they are refused."""
    if "'" in value or "\\" in value:
        raise RegistryError(f"{value!r}: quotes and backslashes are not allowed in model names and keys")
    return value


def _alias_map(model: Any) -> dict[str, str]:
    """Alias → version number of a registered model as MLflow returns it."""
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def _legacy_events(model: Any) -> list[AliasEvent]:
    """Alias events kept as ``pruneops.event.*`` registered-model tags (registries from before the audit runs)."""
    tags = model.tags or {}
    return [AliasEvent(**json.loads(v)) for k, v in tags.items() if k.startswith(EVENT_PREFIX)]


def _now() -> str:
    return datetime.now(tz=UTC).isoformat(timespec="microseconds")
