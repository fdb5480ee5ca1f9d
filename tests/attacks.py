"""What a registry writer can do without pruneops: register any folder with MLflow's own client.

Such a writer can also compute and set the digest tags (they are plain sha256 values), so a
version made here passes the integrity check; what must stop it are the trust rules and the
server's semantic smoke test.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mlflow import MlflowClient

from pruneops.integrity import digest_tags, file_digests
from pruneops.registry import EXPERIMENT, MODEL_DIR, TAG_PREFIX, Registry


def register_unchecked(registry: Registry, name: str, folder: Path, tags: Mapping[str, str]) -> str:
    """Create a version of ``folder`` with forged digests, skipping every pruneops check; returns its number."""
    client = MlflowClient(registry.tracking_uri, registry.tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(EXPERIMENT)
    full = {TAG_PREFIX + k: v for k, v in tags.items()}
    full |= {TAG_PREFIX + k: v for k, v in digest_tags(file_digests(folder, MODEL_DIR)).items()}
    run = client.create_run(experiment_id, tags=full)
    client.log_artifacts(run.info.run_id, str(folder), MODEL_DIR)
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(name, f"{run.info.artifact_uri}/{MODEL_DIR}", run.info.run_id, tags=full)
    client.set_terminated(run.info.run_id)
    return str(version.version)
