"""Start-up and shutdown: load the replicas, bind, serve with uvicorn, drain on SIGTERM/SIGINT.

The socket is bound and listening before the URL line is printed (so `--port 0` works and a client
that connects at once is queued, not refused). uvicorn's own signal handling finishes in-flight
requests; unlike plain uvicorn, a signal that stopped the server is not re-raised afterwards, so a
graceful stop exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edgeproof.errors import UsageError, require
from edgeproof.serve.config import ServeConfig, model_name
from edgeproof.serve.limits import Budget, raise_fd_limit, tune_malloc

if TYPE_CHECKING:  # pragma: no cover
    from edgeproof.runtime.spec import LoadSpec

log = logging.getLogger(__name__)
WHAT = "edgeproof serve"


def require_extra() -> None:
    """The serve extra's packages, or one error with the exact pip line."""
    for module, package in (("starlette", "starlette"), ("uvicorn", "uvicorn"), ("httptools", "httptools"),
                            ("prometheus_client", "prometheus-client"), ("multipart", "python-multipart")):
        require(module, "serve", WHAT, package=package)


@dataclass
class Started:
    url: str
    lan_url: str | None
    name: str
    model: object
    engine: object
    load_s: float
    grpc_target: str | None = None  # host:port of the gRPC service, when --grpc-port
    repository: list[dict] | None = None  # the repository index at start (a models folder), else None


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        why = "it is already in use (another server?)" if exc.errno == 98 else (exc.strerror or str(exc))
        raise UsageError(f"cannot listen on {host}:{port}: {why}; pick another --port (0 = any free port) or "
                         "--host") from None
    sock.set_inheritable(True)
    return sock


def _lan_address() -> str | None:
    """This machine's address on its default route (a UDP connect sends no packet), for the phone URL."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere
            return s.getsockname()[0]
    except OSError:
        return None


def _url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host.strip('[]')}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _make_server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn.Server that drains on a signal and then returns (no re-raised signal: exit 0)."""

        def handle_exit(self, sig, frame) -> None:
            import signal

            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    return Server


def _builder(spec, config: ServeConfig, metrics, budget, pool, versions_of: Callable[[str], list[str]]):
    """(name, version, path) -> a loaded, not yet started Service: config.workers interpreters of that file."""
    from edgeproof.runtime import load
    from edgeproof.serve import oip
    from edgeproof.serve.card import model_card
    from edgeproof.serve.engine import Engine
    from edgeproof.serve.service import Service

    def build(name: str, version: str, path: Path):
        t0 = time.perf_counter()
        models = []
        try:
            for _ in range(config.workers):
                models.append(load(spec.with_path(path)))
        except BaseException:
            for m in models:
                m.close()
            raise
        mm = metrics.model(name, version)
        mm.load_seconds.set(time.perf_counter() - t0)
        engine = Engine(models, max_batch=config.max_batch, batch_timeout_ms=config.batch_timeout_ms,
                        max_queue=config.max_queue, infer_timeout=config.infer_timeout, metrics=mm)
        svc = Service(engine, config, mm, name, pool=pool, budget=budget, version=version)
        svc.card = model_card(models[0], name, engine, config)
        svc.metadata = oip.metadata(models[0], name, versions_of(name))
        return svc

    return build


def serve(model: str | Path | LoadSpec, config: ServeConfig,
          on_started: Callable[[Started], None] | None = None) -> Started:
    """Load, bind, serve until SIGTERM/SIGINT; returns what ran (for the caller's exit code and summary).

    `model`: a LoadSpec (each of config.workers loads it once), or a model file with the default options. A
    folder is a model repository (repository.py): every model in it is served under its folder's name, each
    with the spec's options."""
    require_extra()
    import uvicorn

    from edgeproof.runtime.preprocess import quiet_opencv
    from edgeproof.runtime.spec import LoadSpec
    from edgeproof.serve.app import build_app
    from edgeproof.serve.metrics import Metrics
    from edgeproof.serve.pool import LifoPool
    from edgeproof.serve.protocol import ConnectionLimits, make_protocol
    from edgeproof.serve.repository import Repository, scan

    spec = model if isinstance(model, LoadSpec) else LoadSpec(model)
    metrics = Metrics()
    budget = Budget(config.max_inflight, tune_malloc())
    pool = LifoPool(config.decode_threads, thread_name_prefix="edgeproof-decode")
    is_repo = spec.path.is_dir()
    if is_repo:
        found = scan(spec.path)
        if not found:
            raise UsageError(f"'{spec.path}' holds no model folders; lay it out as NAME/VERSION/model.onnx (or "
                             "NAME/model.tflite), as Triton does, or give one .tflite/.onnx file")
    else:
        found = {config.name or model_name(spec.path): {"1": spec.path}}
    t0 = time.perf_counter()
    repo = Repository(found, None, config, metrics, budget, pool, max_loaded=config.max_models_loaded)
    repo.build = _builder(spec, config, metrics, budget, pool, lambda n: list(repo.entries[n].versions))
    try:
        if is_repo:
            for name in list(repo.entries)[:config.max_models_loaded or None]:
                repo.load_blocking(name)
            if not repo.loaded():
                why = "; ".join(f"{e.name}: {r}" for e in repo.entries.values() for r in e.reasons.values())
                raise UsageError(f"no model in '{spec.path}' could be loaded ({why[:600]})")
        else:  # one model: its load error is the command's error (exit 2), as before
            (name,) = repo.entries
            repo.entries[name].services["1"] = repo.build(name, "1", spec.path)
    except BaseException:
        repo.close()
        raise
    load_s = time.perf_counter() - t0
    quiet_opencv()  # import OpenCV now, not in the first request
    first = repo.loaded()[0]
    svc = next(iter(first.services.values()))
    try:
        sock = bind(config.host, config.port)
    except BaseException:
        repo.close()
        raise
    grpc_server = None
    if config.grpc_port is not None:
        from edgeproof.serve.grpc_server import GrpcServer

        try:
            grpc_server = GrpcServer(repo, config.host, config.grpc_port)
        except BaseException:
            sock.close()
            repo.close()
            raise
    port = sock.getsockname()[1]
    lan = _lan_address() if config.host in ("0.0.0.0", "::") else None
    started = Started(_url(config.host, port, config.scheme), _url(lan, port, config.scheme) if lan else None,
                      svc.name, svc.model, svc.engine, load_s,
                      _url(config.host, grpc_server.port).removeprefix("http://") if grpc_server else None)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        repo.start(asyncio.get_running_loop())
        if grpc_server is not None:
            grpc_server.start(asyncio.get_running_loop())
        metrics.ready.set(1)
        if is_repo:
            started.repository = repo.index()
        if on_started is not None:
            on_started(started)
        try:
            yield
        finally:
            metrics.ready.set(0)
            if grpc_server is not None:  # its in-flight calls wait on this loop: stop it in a thread
                await asyncio.get_running_loop().run_in_executor(None, grpc_server.stop, config.graceful_timeout)
            repo.close()

    app = build_app(repo, lifespan=lifespan)
    limits = ConnectionLimits(max_header_bytes=config.max_header_bytes, header_timeout=config.header_timeout,
                              body_timeout=config.body_timeout, max_connections=raise_fd_limit(config.max_connections),
                              drain_bytes=max(4 * config.max_body, 64 * 2**20))
    # access lines come from MetricsMiddleware (escaped); uvicorn's own access logger stays off
    ucfg = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on", http=make_protocol(limits),
                          timeout_graceful_shutdown=config.graceful_timeout, server_header=False,
                          timeout_keep_alive=5, ssl_certfile=config.tls_cert, ssl_keyfile=config.tls_key)
    server = _make_server_class()(ucfg)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return started
