"""The ``pruneops`` command line (typer + rich).

Results print as tables; a failure prints one line and exits with status 1.

>>> from typer.testing import CliRunner
>>> CliRunner().invoke(app, ["--help"]).exit_code
0
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from pruneops.cliview import show_rows, step_lines
from pruneops.errors import PruneopsError
from pruneops.extras import require

app = typer.Typer(
    name="pruneops",
    help="Prune neural networks, prove the speedup on the target, serve, watch and roll back.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
#: Exit codes: 0 done (a run's gate passed), 1 an error, 2 a usage error (click's), 3 a run whose gate failed.
EXIT_ERROR, EXIT_GATE_FAILED = 1, 3
ModelArg = Annotated[str, typer.Argument(help="Registered model name.")]
ReasonOpt = Annotated[str, typer.Option("--reason", "-r", help="Why; recorded in the audit trail.")]
KfpNamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "--kfp-namespace", envvar="PRUNEOPS_KFP_NAMESPACE", help="Profile namespace on a multi-user Kubeflow."
    ),
]
KfpTokenOpt = Annotated[
    str | None,
    typer.Option(
        "--kfp-token-file",
        envvar="PRUNEOPS_KFP_TOKEN_FILE",
        help="Service-account token for KFP (default: the SDK's projected token, when present).",
    ),
]
HostOpt = Annotated[
    str, typer.Option(help="Address to listen on: loopback by default; 0.0.0.0 in a pod (the chart sets it).")
]
# The sampled-row window's triggers, the same in the sidecar's own drift worker and the drift service.
DriftRowsOpt = Annotated[int, typer.Option(help="Also compute drift after this many new sampled rows.")]
DriftMinRowsOpt = Annotated[int, typer.Option(help="Sampled rows needed before drift is computed at all.")]


def _one_line_errors(func: F) -> F:
    """Print a user error as one red line and exit 1, instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PruneopsError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)
            raise typer.Exit(EXIT_ERROR) from None

    return wrapper  # type: ignore[return-value]


def _needs(*extras: str) -> Callable[[F], F]:
    """Before the verb runs, check its extras are installed (``pruneops.extras``): one line if not.

    Goes under :func:`_one_line_errors`, which prints the error.
    """

    def decorate(func: F) -> F:
        verb = func.__name__.removesuffix("_cmd").replace("_", "-")

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            require(*extras, feature=f"pruneops {verb}")
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _say(text: str) -> None:
    """One line as it is: wrapped by the terminal, not cut or re-flowed at 80 columns in a pipe."""
    console.print(text, soft_wrap=True, highlight=False)


def _show_versions(title: str, rows: list[Any]) -> None:
    columns = ("version", "aliases", "source", "method", "pattern", "sparsity", "accuracy", "gate", "created")
    cells = [
        [
            info.version,
            ", ".join(info.aliases) or "-",
            *(info.tag(key) or "-" for key in ("source", "method", "pattern", "sparsity", "accuracy", "gate")),
            info.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        ]
        for info in rows
    ]
    show_rows(console, title, columns, cells)


def _run_locally(model: str, version: str, recipe: Any, task: str | None = None, heading: str = "result:") -> Any:
    """Run the pipeline here: one line per step, KFP's logs to a file, then the closing summary.

    Returns the :class:`pruneops.runsummary.RunSummary` of the version it registered.
    """
    import sys

    from pruneops.pipelines.runner import log_path, run_local
    from pruneops.registry import Registry
    from pruneops.runsummary import summarize

    log = log_path(model, version)
    console.print(f"steps: baseline -> prune -> finetune -> validate -> register (KFP's logs: {log})", soft_wrap=True)
    # Bound to the terminal now: during the run, sys.stdout is the log file.
    steps_console = Console(file=sys.stdout)
    result = run_local(model, version, recipe, task, on_step=step_lines(steps_console), log_file=log)
    summary = summarize(Registry(), model, result.version)
    console.print(heading)
    for line in summary.lines():
        console.print(f"  {escape(line)}", soft_wrap=True, highlight=False)
    return summary


@app.command("init-demo")
@_one_line_errors
@_needs("pipeline")
def init_demo_cmd(
    name: Annotated[str, typer.Option(help="Model name to register.")] = "digits",
    task: Annotated[str, typer.Option(help="Task import path.")] = "pruneops.tasks.digits:task",
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    force: Annotated[bool, typer.Option(help="Register a new baseline even if a champion exists.")] = False,
) -> None:
    """Train the task's dense baseline and register it as version 1, alias champion."""
    from pruneops.demo import init_demo
    from pruneops.settings import tracking_uri

    with console.status(f"training and registering the {name} baseline"):
        info = init_demo(name, task, seed, force)
    _show_versions(f"{name} @ {tracking_uri()}", [info])


@app.command("register")
@_one_line_errors
@_needs("registry")
def register_cmd(
    name: Annotated[str, typer.Argument(help="Registered model name.")],
    model: Annotated[
        str, typer.Argument(help="The trained model: a saved pruneops folder (arch.json, model.safetensors).")
    ],
    data: Annotated[
        str | None, typer.Option(help="Data file (.npz with inputs/labels, or .parquet with a label column).")
    ] = None,
    metric: Annotated[str | None, typer.Option(help="With --data: accuracy, f1, mse or cosine.")] = None,
    task: Annotated[str | None, typer.Option(help="Instead of --data: a task import path or data: spec.")] = None,
) -> None:
    """Register a trained model as a pipeline source, with how to score it; champion if the model has none."""
    from pruneops.onboard import register_model
    from pruneops.settings import tracking_uri

    with console.status(f"registering {name}"):
        info = register_model(name, model, task=task, data=data, metric=metric)
    _show_versions(f"{name} @ {tracking_uri()}", [info])
    console.print(f"task: {info.tag('task')}")


@app.command("demo")
@_one_line_errors
@_needs("pipeline", "serving", "monitoring")
def demo_cmd(
    name: Annotated[str, typer.Option(help="Model name.")] = "digits",
    monitoring: Annotated[bool, typer.Option(help="Run the closed-loop stage (needs prometheus).")] = True,
) -> None:
    """From nothing: register the digits baseline as champion, run the pipeline with a CPU
    recipe, show the registered challenger with its accuracy drop and measured speedup; then
    serve it, let live analysis promote it, inject a latency regression and watch the rollback."""
    import time

    from pruneops.demo import DEMO_RECIPE, init_demo
    from pruneops.recipe import parse_recipe

    started = time.perf_counter()
    with console.status("training and registering the digits baseline"):
        champion = init_demo(name)
    console.print(f"[bold]1.[/] champion: {name} v{champion.version} (accuracy {champion.tag('accuracy')})")
    console.print("[bold]2.[/] running the pipeline")
    _run_locally(name, champion.version, parse_recipe(DEMO_RECIPE), heading="[bold]3.[/] result:")
    if monitoring:
        _demo_closed_loop(name)
    console.print(f"done in {time.perf_counter() - started:.0f}s")


def _demo_closed_loop(name: str) -> None:
    """The demo's stage 4: serve, analyse, promote, break on purpose, roll back (monitoring/drill.py)."""
    from pruneops.monitoring.drill import closed_loop
    from pruneops.monitoring.localstack import MISSING_BINARIES, have_binaries
    from pruneops.registry import Registry
    from pruneops.settings import state_dir
    from pruneops.tasks import load_task

    if not have_binaries():
        _say(f"[bold]4.[/] closed loop skipped: {MISSING_BINARIES}")
        return
    challenger = Registry().aliases(name).get("challenger")
    _say(f"[bold]4.[/] closed loop: server + sidecar + controller + Prometheus + Alertmanager"
         f"{f'; canary 50% to v{challenger}' if challenger else ''}")  # fmt: skip
    task = load_task(Registry().resolve(name, "champion").tag("task") or "pruneops.tasks.digits:task")
    with console.status("analysing the challenger live, then promoting an injected latency regression"):
        report = closed_loop(name, state_dir() / "loop", task.example_input(300).numpy())
    if report.promoted:
        _say(f"   analysis promoted v{report.promoted} after {report.promotion_s:.0f}s of live traffic")
    drill = report.drill
    served = f"{drill.breach_to_served_s:.1f}s" if drill.breach_to_served_s is not None else "never (see logs)"
    _say(f"   drill: v{drill.regressed} (a slowed copy) promoted; {escape(drill.rollback_why or 'no reason recorded')}")
    _say(f"   v{drill.restored} serving again {served} after the breach; failed requests: {drill.failed_requests}")


@app.command("run")
@_one_line_errors
@_needs("pipeline")
def run_cmd(
    model: Annotated[str, typer.Option("--model", help="Registered model name.")],
    version: Annotated[str, typer.Option("--version", help="Source version (number or alias).")],
    recipe: Annotated[str, typer.Option("--recipe", help="Recipe YAML file.")],
    task: Annotated[
        str | None, typer.Option(help="Task import path; default: the version's pruneops.task tag.")
    ] = None,
    kfp_host: Annotated[str | None, typer.Option("--kfp-host", help="Submit to this KFP API server.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="Tracking URI the cluster uses (with --kfp-host).")] = None,
    kfp_namespace: KfpNamespaceOpt = None,
    kfp_token_file: KfpTokenOpt = None,
) -> None:
    """Run the prune-and-register pipeline locally (kfp.local), or submit it with --kfp-host.

    Exits 0 when the version passed its gates, 3 when it was registered with a failed gate
    (the reasons are printed), 1 on an error.
    """
    from pruneops.pipelines.runner import submit
    from pruneops.recipe import load_recipe
    from pruneops.settings import tracking_uri as default_uri

    parsed = load_recipe(recipe)
    if kfp_host:
        uri = tracking_uri or default_uri()
        run_id = submit(kfp_host, model, version, parsed, task, uri, namespace=kfp_namespace, token_file=kfp_token_file)
        console.print(f"submitted run {run_id} to {kfp_host}")
        return
    summary = _run_locally(model, version, parsed, task)
    if summary.gate != "passed":  # registered as evidence, with no alias: say so, and exit 3
        reasons = "; ".join(summary.reasons) or "no reason recorded"
        err_console.print(
            f"[bold red]gate failed:[/] {model} v{summary.version} has no alias: {escape(reasons)}", soft_wrap=True
        )
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command("trigger")
@_one_line_errors
@_needs("pipeline")
def trigger_cmd(
    config: Annotated[str, typer.Option("--config", help="YAML: task, and models mapped to recipe files.")],
    host: HostOpt = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (webhook mode).")] = 8085,
    poll_interval: Annotated[
        float | None, typer.Option(help="Poll the registry every N seconds instead of receiving webhooks.")
    ] = None,
    kfp_host: Annotated[str | None, typer.Option("--kfp-host", help="Submit runs to this KFP API server.")] = None,
    kfp_namespace: KfpNamespaceOpt = None,
    kfp_token_file: KfpTokenOpt = None,
) -> None:
    """Start a pipeline run for every new model version: MLflow webhooks, or polling."""
    import logging
    import time

    from pruneops.pipelines.trigger import Launcher, TriggerConfig, TriggerState, create_app, default_runner, poll_once
    from pruneops.registry import Registry

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parsed = TriggerConfig.load(config)
    state = TriggerState.open()
    registry = Registry()
    launcher = Launcher(parsed, default_runner(kfp_host, kfp_namespace, kfp_token_file), state, registry)
    if poll_interval is not None:
        console.print(f"polling {', '.join(parsed.models)} every {poll_interval:g}s")
        while True:
            for key in poll_once(parsed, state, launcher, registry):
                console.print(f"started a run for {key}")
            time.sleep(poll_interval)
    import uvicorn

    from pruneops.uvicorn_limits import http_protocol

    uvicorn.run(create_app(parsed, launcher, state), host=host, port=port, log_level="info", http=http_protocol())


@app.command("retry")
@_one_line_errors
@_needs("pipeline")
def retry_cmd(
    model: ModelArg,
    version: Annotated[str, typer.Argument(help="Source version whose triggered run to run again.")],
    config: Annotated[str, typer.Option("--config", help="The trigger's YAML (the model's recipe and task).")],
    kfp_host: Annotated[str | None, typer.Option("--kfp-host", help="Submit to this KFP API server.")] = None,
    kfp_namespace: KfpNamespaceOpt = None,
    kfp_token_file: KfpTokenOpt = None,
    force: Annotated[bool, typer.Option(help="Run it even if its last run succeeded or is marked running.")] = False,
) -> None:
    """Run a triggered pipeline again (after a fix), with the recipe and task trigger.yaml gives the model.

    The outcome is recorded as the trigger records it: the source version's
    ``pruneops.trigger_*`` tags and the trigger's state file. Exits like ``run``: 0 passed,
    3 registered with a failed gate, 1 an error (the run failed again).
    """
    from pruneops.pipelines.trigger import TriggerConfig, TriggerState, run_and_record
    from pruneops.registry import Registry
    from pruneops.settings import tracking_uri

    parsed = TriggerConfig.load(config)
    if model not in parsed.models:
        raise PruneopsError(f"{config} configures no recipe for model {model!r}")
    registry = Registry()
    info = registry.version(model, version)
    status = info.tag("trigger_status")
    if status in ("succeeded", "running") and not force:
        at = info.tag("trigger_at")
        raise PruneopsError(f"{model} v{info.version}: triggered run {status} (at {at}); pass --force to run it again")
    summaries: list[Any] = []

    def run(name: str, number: str, recipe: Any, task: str | None) -> str:
        if kfp_host:
            from pruneops.pipelines.runner import submit

            return submit(
                kfp_host, name, number, recipe, task, tracking_uri(), namespace=kfp_namespace, token_file=kfp_token_file
            )
        summaries.append(_run_locally(name, number, recipe, task))
        return str(summaries[-1].version)

    result = run_and_record(parsed, TriggerState.open(), registry, run, model, info.version)
    if kfp_host:
        console.print(f"submitted run {result} to {kfp_host}")
    elif summaries[-1].gate != "passed":
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command("webhook")
@_one_line_errors
@_needs("registry")
def webhook_cmd(
    url: Annotated[str, typer.Argument(help="Receiver URL, e.g. http://trigger:8085/webhooks/mlflow")],
    name: Annotated[str, typer.Option(help="Webhook name in MLflow.")] = "pruneops-trigger",
    event: Annotated[list[str] | None, typer.Option(help="Event(s) to send.")] = None,
) -> None:
    """Register an MLflow webhook that calls the trigger; the secret comes from $PRUNEOPS_WEBHOOK_SECRET."""
    import os

    from pruneops.errors import PruneopsError
    from pruneops.registry import Registry
    from pruneops.webhooks import SECRET_ENV

    secret = os.environ.get(SECRET_ENV)
    if not secret:
        raise PruneopsError(f"set {SECRET_ENV} to the secret the trigger verifies")
    webhook_id = Registry().create_webhook(name, url, event or ["model_version.created"], secret)
    console.print(f"webhook {name} ({webhook_id}) -> {url}")


@app.command("serve")
@_one_line_errors
@_needs("serving")
def serve_cmd(
    model: Annotated[str, typer.Option("--model", help="Registered model name.")],
    alias: Annotated[str, typer.Option(help="Alias to follow.")] = "champion",
    port: Annotated[int, typer.Option(help="HTTP port (Open Inference Protocol v2).")] = 8080,
    poll_interval: Annotated[float, typer.Option(help="Seconds between registry polls.")] = 5.0,
    canary: Annotated[float, typer.Option(help="Fraction of requests sent to the challenger.")] = 0.0,
    shadow: Annotated[bool, typer.Option(help="Mirror requests to the challenger and compare.")] = False,
    device: Annotated[str, typer.Option(help="cpu, or cuda (ONNX Runtime's CUDA provider, torch-sparse).")] = "cpu",
    host: HostOpt = "127.0.0.1",
    max_batch: Annotated[int, typer.Option(help="Rows one request may carry; more get 400.")] = 1024,
    max_connections: Annotated[
        int, typer.Option(help="Connections and requests at once; more get 503. Keep it above the sidecar's.")
    ] = 512,
) -> None:
    """Serve a model over the V2 protocol, following a registry alias with hot swaps."""
    import logging

    from pruneops.serving.server import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(model, port, alias, poll_interval, canary, shadow, device, host, max_batch, max_connections)


@app.command("sidecar")
@_one_line_errors
@_needs("serving")
def sidecar_cmd(
    upstream: Annotated[str, typer.Option(help="Model server URL.")] = "http://127.0.0.1:8080",
    port: Annotated[int, typer.Option(help="Port the sidecar listens on.")] = 8081,
    max_in_flight: Annotated[int, typer.Option(help="Concurrent requests before answering 503.")] = 64,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the model server.")] = 10.0,
    sample_every: Annotated[int, typer.Option(help="Sample every Nth inference into the drift window.")] = 10,
    drift_interval: Annotated[
        float, typer.Option(help="Seconds between drift computations against the registry's reference; 0 = off.")
    ] = 30.0,
    drift_rows: DriftRowsOpt = 1000,
    drift_min_rows: DriftMinRowsOpt = 200,
    host: HostOpt = "127.0.0.1",
    max_connections: Annotated[int, typer.Option(help="Client connections at once; more get 503.")] = 1024,
    buffer_mb: Annotated[int, typer.Option(help="MiB of request bodies held at once; past it 503.")] = 64,
    header_timeout: Annotated[float, typer.Option(help="Seconds for a request's headers to arrive.")] = 10.0,
    body_timeout: Annotated[float, typer.Option(help="Seconds for a request's body to arrive.")] = 60.0,
    drift_service: Annotated[
        str | None,
        typer.Option(
            help="Send sampled rows to this drift service (token: PRUNEOPS_DRIFT_TOKEN) instead of "
            "computing drift here; drift then covers every replica's traffic."
        ),
    ] = None,
) -> None:
    """Reverse proxy in front of a V2 model server: latency/error metrics, sampling, drift, /metrics."""
    import os

    from pruneops.serving.http1 import ConnectionLimits
    from pruneops.serving.sidecar import Sidecar, served_champion

    limits = ConnectionLimits(max_connections=max_connections, buffer_budget=buffer_mb * 1024 * 1024,
                              header_timeout=header_timeout, body_timeout=body_timeout)  # fmt: skip
    shipper = None
    if drift_service:  # the shipper imports no pandas or Evidently: this sidecar stays lean
        from pruneops.monitoring.window import TOKEN_ENV
        from pruneops.serving.drift_client import DriftShipper, export_shipper

        token = os.environ.get(TOKEN_ENV, "")
        if not token:
            raise PruneopsError(f"--drift-service needs the service's token in {TOKEN_ENV}")
        shipper = DriftShipper(drift_service, token)
    sidecar = Sidecar(upstream, max_in_flight=max_in_flight, timeout=timeout, sample_every=sample_every,
                      limits=limits, sink=shipper.add if shipper is not None else None)  # fmt: skip
    if shipper is not None:
        export_shipper(shipper, sidecar.registry)
        shipper.start()
    elif drift_interval > 0:
        require("monitoring", feature="the sidecar's drift (--drift-interval 0 turns it off)")
        from pruneops.monitoring.drift import DriftWorker

        DriftWorker(sidecar.window, lambda: served_champion(sidecar.last_served), sidecar.registry,
                    interval=drift_interval, every_rows=drift_rows, min_rows=drift_min_rows,
                    in_process=False).start()  # fmt: skip
    sidecar.run(port, host)


@app.command("controller")
@_one_line_errors
@_needs("monitoring")
def controller_cmd(
    model: Annotated[list[str], typer.Option("--model", help="Registered model to watch (repeatable).")],
    prometheus: Annotated[str, typer.Option(help="Prometheus URL the analysis queries.")] = "http://127.0.0.1:9090",
    port: Annotated[int, typer.Option(help="Port for /alerts (Alertmanager webhook) and /metrics.")] = 8090,
    interval: Annotated[float, typer.Option(help="Seconds between analysis runs.")] = 10.0,
    host: HostOpt = "127.0.0.1",
    namespace: Annotated[
        str | None,
        typer.Option(
            envvar="PRUNEOPS_NAMESPACE",
            help="This install's Kubernetes namespace: analysis reads only its series, alerts from others are ignored.",
        ),
    ] = None,
) -> None:
    """Rollout controller: promote on live analysis, roll back on alerts (token: PRUNEOPS_CONTROLLER_TOKEN)."""
    import logging
    import os

    import uvicorn

    from pruneops.monitoring.controller import TOKEN_ENV, Controller, create_app
    from pruneops.monitoring.prom import PromQuery
    from pruneops.uvicorn_limits import http_protocol

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    controller = Controller(model, PromQuery(prometheus), interval=interval, namespace=namespace or None)
    app = create_app(controller, os.environ.get(TOKEN_ENV, ""))
    for name in model:
        controller.analyse_once(name)  # export the registry state before the first scrape
    controller.run()
    uvicorn.run(app, host=host, port=port, log_level="warning", http=http_protocol())


@app.command("drift-service")
@_one_line_errors
@_needs("monitoring")
def drift_service_cmd(
    port: Annotated[int, typer.Option(help="Port for /v1/samples (from the sidecars), /metrics and /healthz.")] = 8092,
    host: HostOpt = "127.0.0.1",
    interval: Annotated[float, typer.Option(help="Seconds between drift computations per model.")] = 30.0,
    drift_rows: DriftRowsOpt = 1000,
    drift_min_rows: DriftMinRowsOpt = 200,
    max_models: Annotated[int, typer.Option(help="Models that get a window; samples of more are refused.")] = 32,
) -> None:
    """Drift over each model's whole traffic, fed by every sidecar's samples (token: PRUNEOPS_DRIFT_TOKEN)."""
    import logging
    import os

    import uvicorn
    from prometheus_client import CollectorRegistry

    from pruneops.monitoring.drift_service import TOKEN_ENV, DriftService, create_app
    from pruneops.uvicorn_limits import http_protocol

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    service = DriftService(CollectorRegistry(), max_models=max_models, interval=interval, every_rows=drift_rows,
                           min_rows=drift_min_rows)  # fmt: skip
    app = create_app(service, os.environ.get(TOKEN_ENV, ""))
    uvicorn.run(app, host=host, port=port, log_level="warning", http=http_protocol())


@app.command("compile")
@_one_line_errors
@_needs("pipeline")
def compile_cmd(
    output_dir: Annotated[str, typer.Option(help="Where to write the IR YAML.")] = "pipelines/compiled",
    gpu_accelerator: Annotated[str, typer.Option(help="Accelerator type of the GPU validate step.")] = "nvidia.com/gpu",
    gpu_count: Annotated[int, typer.Option(help="Accelerators the GPU validate step requests.")] = 1,
    gpu_node_selector: Annotated[
        str, typer.Option(help="Node label KEY=VALUE the GPU validate step is placed on.")
    ] = "nvidia.com/gpu.present=true",
    gpu_toleration: Annotated[str, typer.Option(help="Taint key the GPU validate step tolerates.")] = "nvidia.com/gpu",
    resources: Annotated[
        str | None, typer.Option(help="YAML: per-step CPU/memory requests and limits over the defaults.")
    ] = None,
    mlflow_secret: Annotated[
        str, typer.Option(help="Kubernetes secret with MLflow's URI and credentials ('' for none).")
    ] = "mlflow-credentials",
) -> None:
    """Write the pipeline's KFP IR: prune_and_register.yaml (CPU) and prune_and_register_gpu.yaml.

    Every step gets CPU and memory requests and limits; the steps that talk to MLflow get
    retries with backoff and the MLflow secret's keys as environment variables; the steps
    that write to MLflow are never cached (docs/pipeline.md).
    """
    from pruneops.errors import PruneopsError
    from pruneops.pipelines.cluster import ClusterSettings
    from pruneops.pipelines.prune_and_register import GpuPlacement, compile_pipelines

    key, sep, value = gpu_node_selector.partition("=")
    if not sep or not key:
        raise PruneopsError(f"--gpu-node-selector must be KEY=VALUE, got {gpu_node_selector!r}")
    placement = GpuPlacement(gpu_accelerator, gpu_count, key, value, gpu_toleration)
    for path in compile_pipelines(output_dir, placement, ClusterSettings.load(resources, mlflow_secret)):
        console.print(f"wrote {path}")


@app.command("check-recipe")
@_one_line_errors
def check_recipe_cmd(path: Annotated[str, typer.Argument(help="Recipe YAML file.")]) -> None:
    """Validate a recipe and print it with every default filled in."""
    from pruneops.recipe import dump_recipe, load_recipe

    recipe = load_recipe(path if path.endswith((".yaml", ".yml", ".json")) else path + ".yaml")
    console.print(f"[green]{path}: valid[/] (sha256 {recipe.sha256()[:12]})")
    console.print(dump_recipe(recipe), highlight=False, markup=False)


@app.command("versions")
@_one_line_errors
@_needs("registry")
def versions_cmd(model: ModelArg) -> None:
    """List a model's versions with their aliases, lineage tags and gate."""
    from pruneops.registry import Registry

    _show_versions(f"versions of {model}", Registry().versions(model))


@app.command("history")
@_one_line_errors
@_needs("registry")
def history_cmd(model: ModelArg) -> None:
    """Print every alias change of a model: when, what, who and why.

    Changes made outside pruneops (the MLflow UI or API) are found and recorded first, as
    action ``outside``.
    """
    from pruneops.registry import Registry

    registry = Registry()
    registry.reconcile(model)

    rows = [
        [
            event.at.replace("T", " ")[:19],
            event.action,
            event.alias,
            f"v{event.from_version}" if event.from_version else "-",
            f"v{event.version}" if event.version else "(removed)",
            event.who,
            event.why or "-",
        ]
        for event in registry.history(model)
    ]
    show_rows(console, f"alias history of {model}", ("when (UTC)", "action", "alias", "from", "to", "who", "why"), rows)


@app.command("promote")
@_one_line_errors
@_needs("registry")
def promote_cmd(
    model: ModelArg,
    version: Annotated[str | None, typer.Argument(help="Version to promote; default: the challenger.")] = None,
    reason: ReasonOpt = "manual promotion",
) -> None:
    """Make a version (default: the challenger) champion; the old champion becomes previous."""
    from pruneops.registry import Registry

    change = Registry().promote(model, version, why=reason)
    console.print(
        f"[green]{model}:[/] {change.message}" if change.changed else f"{model}: {change.message} (no change)"
    )


@app.command("rollback")
@_one_line_errors
@_needs("registry")
def rollback_cmd(
    model: ModelArg,
    to: Annotated[str | None, typer.Option("--to", help="Version to roll back to; default: previous.")] = None,
    reason: ReasonOpt = "manual rollback",
) -> None:
    """Make the previous version (or --to VERSION) champion again."""
    from pruneops.registry import Registry

    change = Registry().rollback(model, to, why=reason)
    console.print(
        f"[green]{model}:[/] {change.message}" if change.changed else f"{model}: {change.message} (no change)"
    )


def main() -> None:
    """Console-script entry point: ``pruneops VERB ...`` from ``sys.argv``, exiting with its status.

    >>> import contextlib, io, sys, tempfile
    >>> from pathlib import Path
    >>> def pruneops(*args):  # as the shell runs it: exit status and stderr
    ...     argv, sys.argv, stderr = sys.argv, ["pruneops", *args], io.StringIO()
    ...     try:
    ...         with contextlib.redirect_stderr(stderr):
    ...             main()
    ...     except SystemExit as exit:
    ...         return exit.code, stderr.getvalue()
    ...     finally:
    ...         sys.argv = argv
    >>> recipe = Path(tempfile.mkdtemp()) / "recipe.yaml"
    >>> _ = recipe.write_text("prune: {sparsity: 2}")
    >>> pruneops("check-recipe", str(recipe))  # one line, no traceback
    (1, 'error: invalid recipe: prune.sparsity: must be in (0, 1) exclusive, got 2.0; e.g. 0.5 removes half\\n')
    """
    import os

    from pruneops.settings import use_process_defaults

    use_process_defaults()
    # MLflow logs schema migrations at INFO on every new store; the CLI shows its own progress.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # Nor its per-file download bars, which bury the steps' lines.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    app()


if __name__ == "__main__":
    main()
