"""Where pruneops keeps local state and which MLflow tracking server it talks to.

The embedded default keeps everything in one state folder: ``$PRUNEOPS_HOME`` (default
``./.pruneops``) holding ``mlflow.db`` (SQLite registry) and ``artifacts/``. Any
``MLFLOW_TRACKING_URI`` overrides it, a remote ``mlflow server`` included.

>>> import os
>>> os.environ["PRUNEOPS_HOME"] = "/tmp/pruneops-doc"
>>> os.environ.pop("MLFLOW_TRACKING_URI", None) and None
>>> tracking_uri()
'sqlite:////tmp/pruneops-doc/mlflow.db'
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """The local state folder, from ``PRUNEOPS_HOME`` (default ``./.pruneops``), made absolute.

    >>> state_dir().is_absolute()
    True
    """
    return Path(os.environ.get("PRUNEOPS_HOME", ".pruneops")).expanduser().resolve()


def tracking_uri() -> str:
    """The MLflow tracking URI: ``MLFLOW_TRACKING_URI`` if set, else SQLite in the state folder.

    >>> tracking_uri().startswith(("sqlite:", "http", "file:", "databricks", "postgresql"))
    True
    """
    explicit = os.environ.get("MLFLOW_TRACKING_URI")
    if explicit:
        return explicit
    return f"sqlite:///{state_dir() / 'mlflow.db'}"


def artifact_root() -> str:
    """Where a local SQLite store puts artifacts: ``<state dir>/artifacts``.

    >>> artifact_root().endswith("artifacts")
    True
    """
    return str(state_dir() / "artifacts")


def actor() -> str:
    """Who is making a change, for audit records: ``PRUNEOPS_ACTOR``, else the login name.

    >>> os.environ["PRUNEOPS_ACTOR"] = "controller"
    >>> actor()
    'controller'
    >>> del os.environ["PRUNEOPS_ACTOR"]
    """
    explicit = os.environ.get("PRUNEOPS_ACTOR")
    if explicit:
        return explicit
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"


#: MLflow settings for the processes pruneops owns (the CLI and the services it starts, the
#: pipeline's steps): fail within seconds, not minutes, when a remote tracking server is down
#: (MLflow's own default retries for several minutes), and no telemetry. Set only where unset.
MLFLOW_PROCESS_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def use_process_defaults() -> None:
    """Apply :data:`MLFLOW_PROCESS_DEFAULTS` to this process's environment, keeping what the user set.

    Called by entry points, never on import: a library user's process keeps its own settings.

    >>> os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "60"
    >>> use_process_defaults()
    >>> os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"], os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    ('60', '2')
    """
    for key, value in MLFLOW_PROCESS_DEFAULTS.items():
        os.environ.setdefault(key, value)
