"""The same server on Ray Serve: ``qzhou-plugins serve --ray [ADDRESS] --replicas N``.

One deployment of N replicas, each running the app of :func:`~.app.create_app` (our routes, errors,
key check, metrics and cross-request batching queue) around its own copy of the model, one GPU each
where the model goes to CUDA. Serve's proxy listens on ``--host``/``--port`` and spreads requests
over the replicas; each replica's queue then coalesces the requests it is given.

A replica loads its model before it reports ready, so that the proxy never sends a request to a
replica that would answer 503 while a sibling could answer it; a model that cannot load fails the
deployment with its reason instead of being retried for ever. Each response names the replica that
made it in the ``x-qzhou-replica`` header (which copy answered, for logs and load-balancing checks).

This is the only server module that imports Ray; without Ray Serve, ``--ray`` names the extra.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
import threading
from typing import Any

from ..encoder import Encoder
from ..ray_cluster import ray_cluster, share_cpu_threads
from .app import SHUTDOWN_GRACE_SECONDS, create_app, python_log_level
from .settings import ServerSettings

logger = logging.getLogger("qzhou_plugins.server")

APP_NAME = "qzhou-plugins"
"""The Serve application (and deployment) name: ``serve status`` shows it, a redeploy replaces it."""
REPLICA_HEADER = "x-qzhou-replica"
MAX_ONGOING_REQUESTS = 256
"""Requests one replica holds at once (Serve's default is 5). Our queue batches only the requests a
replica holds, and many small concurrent ones are what it coalesces; past this, requests wait in the
proxy for a free replica."""
CONSTRUCTOR_RETRIES = 1
"""A model that cannot load will not load on the second try either: fail the deployment quickly."""


def import_serve() -> tuple[Any, Any]:
    """``ray`` and ``ray.serve``, or an ImportError that names the extra to install."""
    try:
        import ray
        import ray.serve
    except ImportError as error:
        raise ImportError(
            "serving on Ray needs Ray Serve: pip install 'qzhou-plugins[ray]' "
            f"(or serve without --ray, in this process) [{error}]"
        ) from error
    return ray, ray.serve


class ReplicaHeader:
    """ASGI middleware: every HTTP response names the replica that made it."""

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode())

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_named(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), self.header]}
            await send(message)

        await self.app(scope, receive, send_named)


class Replica:
    """One Serve replica: its model, loaded before it reports ready, and the app around it."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.service: Any = None  # the app's EmbeddingService, once built
        self.reranking: Any = None  # and its RerankService (a --rerank-model loads after the encoder)

    async def __serve_build_asgi_app__(self) -> Any:
        """Called by Serve in the replica: load the model (off the event loop), then build the app."""
        from ray import serve

        context = serve.get_replica_context()
        try:
            encoder = await asyncio.to_thread(Encoder.shared, self.settings.encoder_config())
        except Exception as error:  # Serve reports only the last line of a failed replica's traceback
            raise RuntimeError(
                f"could not load {self.settings.model!r}: {type(error).__name__}: {error}"
            ) from None
        if encoder.device is not None and encoder.device.type == "cpu":
            share_cpu_threads(context.world_size)
        app = create_app(self.settings, encoder=encoder)
        app.add_middleware(ReplicaHeader, replica=context.replica_id.unique_id)
        self.service, self.reranking = app.state.service, app.state.reranking
        return app

    async def check_health(self) -> None:
        """Serve's health hook: a replica is ready once its warm-up passes ran, and is replaced if one
        failed. (Serve's first check, right after the app started, waits here for the warm-up.)"""
        while (self.service.encoder is None or self.reranking.loading) and not self._load_error():
            await asyncio.sleep(0.02)
        if self._load_error():
            raise RuntimeError(self._load_error())

    def _load_error(self) -> str | None:
        return self.service.load_error or self.reranking.load_error  # type: ignore[no-any-return]


def replica_resources(settings: ServerSettings, cluster: dict[str, float], replicas: int) -> dict[str, float]:
    """What each replica reserves: one GPU where the model goes to CUDA, else a share of the CPUs.

    The device is decided by the cluster, not by this machine (the driver may have no GPU): a
    replica gets a GPU when the cluster has any and ``--device`` is unset or ``cuda``. Ray then
    shows each replica only its own GPU, as ``cuda:0``. CPU replicas reserve at most one CPU each,
    less where that would not fit (Serve's controller and proxy reserve none).
    """
    device = settings.device or ""
    if device.startswith("cuda:"):
        raise ValueError(
            f"--device {device} names one GPU, but on Ray each replica gets its own: use --device cuda"
        )
    gpus = cluster.get("GPU", 0)
    if device == "cuda" and not gpus:
        raise ValueError("--device cuda, but the Ray cluster has no GPU: leave --device unset or use cpu")
    if gpus and device in ("", "cuda"):
        return {"num_cpus": 1.0, "num_gpus": 1.0}
    cpus = cluster.get("CPU", 1)
    return {"num_cpus": round(min(1.0, cpus / replicas), 3)}


def deploy(settings: ServerSettings, replicas: int) -> str:
    """Deploy the app on the connected Ray cluster; returns its URL once every replica is ready.

    Serve's HTTP proxy listens on ``settings.host``/``settings.port``; they take effect when this
    call starts Serve on the cluster (a Serve already running keeps the address it has).
    """
    ray, serve = import_serve()
    if replicas < 1:
        raise ValueError(f"--replicas must be at least 1, not {replicas}")
    resources = replica_resources(settings, ray.cluster_resources(), replicas)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    deployment = serve.deployment(
        serve.ingress()(Replica),
        name=APP_NAME,
        num_replicas=replicas,
        ray_actor_options=resources,
        max_ongoing_requests=MAX_ONGOING_REQUESTS,
        graceful_shutdown_timeout_s=SHUTDOWN_GRACE_SECONDS,
        max_constructor_retry_count=CONSTRUCTOR_RETRIES,
        logging_config={
            "log_level": python_log_level(settings.log_level),
            "enable_access_log": settings.access_log,
        },
    )
    try:
        serve.run(deployment.bind(settings), name=APP_NAME, route_prefix="/")
    except RuntimeError as error:
        reason = _failure_reason(serve) or str(error)
        serve.delete(APP_NAME)  # not left behind, failed, on a cluster that outlives this command
        raise RuntimeError(f"the replicas did not start: {reason}") from None
    return f"http://{settings.host}:{settings.port}"


def _failure_reason(serve: Any) -> str | None:
    """The last line of the deployment's error: our own message, not Serve's traceback around it."""
    application = serve.status().applications.get(APP_NAME)
    deployment = application.deployments.get(APP_NAME) if application is not None else None
    lines = [line for line in (deployment.message if deployment else "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def undeploy() -> None:
    """Remove the app; requests in flight finish first (up to the grace period)."""
    _, serve = import_serve()
    serve.delete(APP_NAME)


def serve_on_ray(settings: ServerSettings, address: str | None, replicas: int) -> int:
    """Deploy, serve until SIGTERM or Ctrl-C, then remove the app: the ``--ray`` command's body.

    Without ``address`` a local cluster is started (and stopped after); with one, the cluster is
    joined and only our app is removed at the end: Serve and the cluster stay as they were.
    Returns 0 after a clean stop, 1 if the deployment failed, 2 for options the cluster refuses.
    """
    ray, _ = import_serve()
    try:
        with ray_cluster(ray, address) as started_here:
            return _serve_until_stopped(ray, settings, replicas, started_here)
    except ConnectionError as error:  # ray.init's: no cluster at that address
        print(f"error: could not join the Ray cluster at {address!r}: {error}", file=sys.stderr)
        return 1


def _serve_until_stopped(ray: Any, settings: ServerSettings, replicas: int, started_here: bool) -> int:
    stop = threading.Event()
    # Installed after ray.init, which sets handlers of its own in the driver.
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if started_here:
            check_local_cluster(settings, ray.cluster_resources(), replicas)
        url = deploy(settings, replicas)
        where = "a local Ray cluster" if started_here else "the Ray cluster"
        print(f"serving {settings.name!r} at {url}/v1: {replicas} replica(s) on {where}", file=sys.stderr)
        while not stop.wait(1.0):
            pass
        undeploy()
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def check_local_cluster(settings: ServerSettings, cluster: dict[str, float], replicas: int) -> None:
    """What a cluster started here cannot do, said before Serve waits for it for ever: more GPU
    replicas than GPUs, or a port already taken (Serve's proxy would retry binding it in a loop).

    Not checked on a joined cluster: it may add GPUs on demand, and its proxy listens elsewhere.
    """
    gpus = int(cluster.get("GPU", 0))
    if "num_gpus" in replica_resources(settings, cluster, replicas) and replicas > gpus:
        raise ValueError(f"--replicas {replicas} needs a GPU each, and this machine has {gpus}")
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the proxy: TIME_WAIT is no owner
        try:
            probe.bind((settings.host, settings.port))
        except OSError as error:
            raise ValueError(f"cannot listen on {settings.host}:{settings.port}: {error.strerror}") from None
