"""Start a local Ray on demand or join an existing cluster; quiet, bounded, and torn down when we started it.

`ray_session(address, num_cpus)`:
- address None and no RAY_ADDRESS: a fresh local Ray with `num_cpus` CPUs (no dashboard), shut down on exit,
  even where a `ray start` cluster runs on this machine (join that one with address "auto");
- address (or RAY_ADDRESS) "auto", "HOST:PORT" or "ray://HOST:10001": join that cluster; it is left running;
- Ray already initialized in this process (a library user's own ray.init): used as is, left running.
Ray Data keeps input order (preserve_order) and prints no progress bars: stdout carries only results.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from edgeproof.errors import EdgeproofError, MissingDependency, UsageError

log = logging.getLogger(__name__)
INSTALL = "pip install 'edgeproof[ray]'"
LOCAL_OBJECT_STORE_BYTES = 256 * 2**20  # rows are paths and scores: a small store is plenty and starts fast
PROBE_S = 5.0  # a cluster address must accept a TCP connection within this
ROWS_PER_TASK = 64  # inputs per actor call: amortizes Ray's per-task cost (~ms) over many images


@dataclass
class RaySession:
    address: str  # the GCS address ("HOST:PORT") of the cluster in use
    started_here: bool  # a local Ray this process started (and shuts down)
    cpus: int  # CPUs the cluster offers
    startup_s: float
    session_dir: str | None = None
    nodes: int = 1
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"address": self.address, "started_here": self.started_here, "cluster_cpus": self.cpus,
                "nodes": self.nodes, "startup_s": round(self.startup_s, 3), "session_dir": self.session_dir}


def import_ray(what: str = "--engine ray"):
    """ray and ray.data, or MissingDependency with the pip line."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise MissingDependency("ray", "ray", what) from None
    return ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[RaySession]:
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    t0 = time.perf_counter()
    started_here = False
    if not ray.is_initialized():
        kwargs: dict = {"logging_level": logging.ERROR, "log_to_driver": False, "include_dashboard": False,
                        "configure_logging": True}
        if address is None:
            kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1, object_store_memory=LOCAL_OBJECT_STORE_BYTES)
        else:
            _probe(address)
        try:  # "local": a fresh instance even where `ray start` left a cluster (or its stale address file)
            ray.init(address=address or "local", **kwargs)
        except ConnectionError as exc:
            auth = ("; if the cluster uses token authentication (Ray's default), set RAY_AUTH_MODE=token with its "
                    "token in ~/.ray/auth_token or RAY_AUTH_TOKEN" if not os.environ.get("RAY_AUTH_MODE") else "")
            raise UsageError(f"cannot connect to the Ray cluster at '{address}': {_first_line(exc)}; check the "
                             f"address ('ray status' on the head node prints it){auth}, or drop --address/RAY_ADDRESS "
                             "to start a local Ray") from None
        except (RuntimeError, ValueError) as exc:
            raise EdgeproofError(f"cannot start Ray ({'join ' + address if address else 'local'}): "
                                 f"{_first_line(exc)}") from None
        started_here = address is None
    try:
        _configure_data()
        ctx = ray.get_runtime_context()
        resources = ray.cluster_resources()
        session = RaySession(address=ctx.gcs_address, started_here=started_here,
                             cpus=int(resources.get("CPU", 0)), startup_s=time.perf_counter() - t0,
                             session_dir=_session_dir(ray), nodes=sum(1 for n in ray.nodes() if n.get("Alive")))
        log.debug("ray: %s cluster at %s, %d CPU(s) on %d node(s), ready in %.1f s",
                 "local" if started_here else "existing", session.address, session.cpus, session.nodes,
                 session.startup_s)
        yield session
    finally:
        if started_here:
            ray.shutdown()


def map_on_actors(ds, fn_class, actors: int, cpus_per_actor: int, constructor_kwargs: dict):
    """ds.map_batches(fn_class) on a fixed pool of `actors` actors, ROWS_PER_TASK rows per call, in input order.

    Actors are not restarted (max_restarts=0): a worker that dies (a node lost, an inference call over
    --infer-timeout) ends the run with one error line instead of replaying the batch that killed it forever.
    Ray 2.60 takes max_restarts only through the deprecated **ray_remote_args; its warning is silenced here."""
    import warnings

    import ray.data

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        return ds.map_batches(fn_class, batch_size=ROWS_PER_TASK, batch_format="numpy",
                              compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor,
                              fn_constructor_kwargs=constructor_kwargs, max_restarts=0)


def _probe(address: str) -> None:
    """A HOST:PORT (or ray://HOST:PORT) that accepts no TCP connection is one line within PROBE_S: Ray itself
    retries a wrong address for minutes."""
    import socket

    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "local" and other forms Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_S).close()
    except OSError as exc:
        raise UsageError(f"cannot reach the Ray cluster at '{address}' ({exc.strerror or exc}); check the address "
                         "and port (the head node's 'ray status' prints it; 6379 for 'ray start --head', 10001 for "
                         "ray://), or drop --address/RAY_ADDRESS to start a local Ray") from None


def _configure_data() -> None:
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # results come back in input order, as locally
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # "progress bars disabled" is no news


def _session_dir(ray) -> str | None:
    """Where this Ray keeps its logs (for error lines); None where Ray does not say (e.g. Ray Client)."""
    try:
        return ray._private.worker.global_worker.node.get_session_dir_path()
    except (AttributeError, RuntimeError):  # a private API (absent under Ray Client): only a hint in messages
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def engine_error(exc: BaseException, session: RaySession, infer_timeout: float = 0.0) -> EdgeproofError:
    """An error from inside Ray as the one line the local engine would print (the actor's own EdgeproofError,
    e.g. a model a worker cannot load), or what died and where its worker logs are."""
    seen, cause = set(), exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, EdgeproofError) and type(cause).__module__.startswith("edgeproof"):
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__
    text = str(exc).strip().splitlines()
    first = next((ln for ln in text if "Error" in ln), text[0] if text else type(exc).__name__)[:300]
    hint = (f"; an inference call over --infer-timeout ({infer_timeout:g} s) ends its worker" if infer_timeout
            else "")
    logs = f" (worker logs: {session.session_dir}/logs)" if session.session_dir else ""
    return EdgeproofError(f"the Ray run failed: {first}{hint}{logs}")
