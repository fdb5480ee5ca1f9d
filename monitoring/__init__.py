"""The observing half: metric names (``metrics``), drift with Evidently (``drift``), the rollout
controller that promotes or rolls back by moving registry aliases (``controller``), Prometheus
queries (``prom``), the local Prometheus + Alertmanager stack (``localstack``), the closed-loop
drill (``drill``); ``prometheus/`` rules and their promtool tests, ``grafana/`` dashboards.

Installed as ``pruneops.monitoring`` from the repository's ``monitoring/`` folder; needs the
``monitoring`` extra.
"""
