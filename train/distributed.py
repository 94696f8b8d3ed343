"""Where a training process stands in a cluster, and the tf.distribute strategy it trains under.

One process trains alone (TensorFlow's default strategy) unless it is given a cluster:
  - TF_CONFIG in the environment (the TensorFlow convention:
    {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}), or
  - `--cluster FILE` with that same JSON (a "task" in the file, or `--task-index I`), or
  - `edgeproof train --workers N`, which starts N local processes on 127.0.0.1 with TF_CONFIG set
    (train/launch.py): the same code path as a real cluster.
The chief (task "chief", else worker 0) writes the run folder; the other workers write nothing.

Waits are bounded: the cluster must assemble within `timeout` seconds, every collective gives up
after `timeout` seconds, and a peer that stops answering is noticed by TensorFlow's health check
within about `HEALTH_INTERVAL + HEALTH_TIMEOUT * HEALTH_RETRIES` seconds, which aborts the pending
collectives. Either way the run ends with a `WorkerLost` error (one line, exit code 3).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeproof.errors import EdgeproofError, UsageError

DEFAULT_TIMEOUT = 300.0  # seconds: cluster start-up, and any one collective (a slow epoch end included)
HEALTH_INTERVAL, HEALTH_TIMEOUT, HEALTH_RETRIES = 3, 3, 2  # TensorFlow's defaults: 30 s, 10 s, 3


class WorkerLost(EdgeproofError):
    """A peer of a multi-worker run died or stopped answering; the committed checkpoint survives."""

    exit_code = 3


@dataclass(frozen=True)
class Topology:
    """This process's place in the training cluster."""

    workers: tuple[str, ...] = ()  # host:port of every worker (chief first when there is a chief job)
    task_type: str = "worker"
    task_index: int = 0
    source: str = "single"  # "single", "TF_CONFIG", "--cluster FILE", "--workers N (local)"
    chief_job: bool = False  # the cluster has a "chief" job (its first entry in `workers`)

    @property
    def count(self) -> int:
        return max(1, len(self.workers))

    @property
    def rank(self) -> int:
        """0 for the chief; the order in which tf.distribute numbers the workers."""
        if self.task_type == "chief":
            return 0
        return self.task_index + (1 if self.chief_job else 0)

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """What metrics.json records."""
        return {"workers": self.count, "source": self.source, "hosts": list(self.workers) or ["localhost"],
                "chief": (list(self.workers) or ["localhost"])[0],
                "strategy": "MultiWorkerMirroredStrategy" if self.count > 1 else "default (one process)"}


def _from_config(cfg: Any, where: str, task_index: int | None = None) -> Topology:
    hint = ('expected {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}; '
            "see docs/scale-out.md")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("cluster"), dict):
        raise UsageError(f"{where} has no \"cluster\" object; {hint}")
    cluster = cfg["cluster"]
    unknown = sorted(set(cluster) - {"chief", "worker"})
    if unknown:
        raise UsageError(f"{where}: job(s) {', '.join(unknown)} are not used by edgeproof train (only chief and "
                         f"worker); {hint}")
    chief = cluster.get("chief") or []
    workers = cluster.get("worker") or []
    hosts = [*chief, *workers]
    if len(chief) > 1 or not hosts or not all(isinstance(h, str) and ":" in h for h in hosts):
        raise UsageError(f"{where}: the cluster must list at most one chief and host:port strings; {hint}")
    task = cfg.get("task") or {}
    ttype = task.get("type", "worker")
    index = task_index if task_index is not None else task.get("index")
    if ttype not in ("chief", "worker") or not isinstance(index, int):
        raise UsageError(f"{where}: no task for this process (task.type chief|worker and task.index); give "
                         f"--task-index I or a \"task\" entry; {hint}")
    size = len(chief) if ttype == "chief" else len(workers)
    if not 0 <= index < size:
        raise UsageError(f"{where}: task {ttype} {index} is not in the cluster ({size} {ttype} entries); use "
                         f"an index 0..{size - 1}")
    return Topology(workers=tuple(hosts), task_type=ttype, task_index=index, source=where.split(" '")[0],
                    chief_job=bool(chief))


def resolve_topology(cluster_file: str | Path | None = None, task_index: int | None = None,
                     environ: dict[str, str] | None = None) -> Topology:
    """The topology from --cluster FILE, else TF_CONFIG, else a single process."""
    env = os.environ if environ is None else environ
    if cluster_file is not None:
        from edgeproof import user_files

        path = Path(cluster_file)
        cfg = user_files.read_json(path, user_files.CLUSTER, "--cluster")
        return _from_config(cfg, f"--cluster '{path}'", task_index)
    raw = env.get("TF_CONFIG", "").strip()
    if raw:
        try:
            cfg = json.loads(raw)
        except ValueError as exc:
            raise UsageError(f"TF_CONFIG is not valid JSON ({exc}); fix or unset it") from None
        topo = _from_config(cfg, "TF_CONFIG", task_index)
        return topo if topo.count > 1 else Topology()
    if task_index is not None:
        raise UsageError("--task-index needs --cluster FILE (or TF_CONFIG)")
    return Topology()


def make_strategy(topo: Topology, timeout: float = DEFAULT_TIMEOUT):
    """The default strategy for one process; else MultiWorkerMirroredStrategy with bounded waits.

    Must run before TensorFlow executes anything else in this process (a tf.distribute rule).
    """
    import tensorflow as tf

    if topo.count == 1:
        return tf.distribute.get_strategy()
    from tensorflow.python.distribute import collective_all_reduce_strategy as cars
    from tensorflow.python.distribute import distribute_lib
    from tensorflow.python.distribute.cluster_resolver import SimpleClusterResolver

    jobs = {"worker": list(topo.workers[1:] if topo.chief_job else topo.workers)}
    if topo.chief_job:
        jobs["chief"] = [topo.workers[0]]
    resolver = SimpleClusterResolver(tf.train.ClusterSpec(jobs), task_type=topo.task_type,
                                     task_id=topo.task_index, rpc_layer="grpc")
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=float(timeout), implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    # TensorFlow waits for the cluster forever by default (initial timeout 0) and notices a dead peer only
    # after 30 s + 3 x 10 s; these are class attributes of the strategy's "extended", read in its __init__.
    extended = type("BoundedCollectiveExtended", (cars.CollectiveAllReduceExtended,), {
        "_check_health_initial_timeout": max(1, int(timeout)), "_check_health_interval": HEALTH_INTERVAL,
        "_check_health_timeout": HEALTH_TIMEOUT, "_check_health_retry_limit": HEALTH_RETRIES})
    strategy = tf.distribute.MultiWorkerMirroredStrategy.__new__(tf.distribute.MultiWorkerMirroredStrategy)
    try:
        distribute_lib.Strategy.__init__(strategy, extended(strategy, cluster_resolver=resolver,
                                                            communication_options=options))
    except RuntimeError as exc:  # "Timeout waiting for the cluster"
        raise WorkerLost(f"the training cluster did not assemble within {timeout:g} s ({exc}); start every "
                         f"worker of {', '.join(topo.workers)} with the same cluster") from None
    return strategy


def stop_health_checks(strategy: Any) -> None:
    """After the last collective: peers may exit now without this process calling them down."""
    stop = getattr(strategy.extended, "_stop_check_health_thread", None)
    if stop is not None:
        stop()


def is_collective_failure(exc: BaseException) -> bool:
    """A TensorFlow error raised because a peer died, restarted or timed out."""
    try:
        import tensorflow as tf
    except ImportError:  # pragma: no cover
        return False
    lost = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
            tf.errors.FailedPreconditionError, tf.errors.AbortedError, tf.errors.InternalError)
    return isinstance(exc, lost)


def lost_error(topo: Topology, exc: BaseException, epoch: int, resume_hint: str) -> WorkerLost:
    first = (getattr(exc, "message", None) or str(exc)).strip().splitlines()[0][:160]
    return WorkerLost(f"worker {topo.rank} of {topo.count}: lost the training cluster during epoch {epoch + 1} "
                      f"({type(exc).__name__}: {first}); {resume_hint}")


def fingerprint48(obj: Any) -> float:
    """48 bits of sha256 over JSON, exact in a float64 (what the collectives below carry)."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()
    return float(int(digest[:12], 16))


class Collectives:
    """The two small collectives the session needs beyond the train step, each traced once.

    gather(row) -> every worker's row (float64) in rank order, numpy (workers, len(row));
    broadcast(variables) -> every worker takes the chief's values (an all-reduce of the chief's values and
    zeros: exact). Used when resuming, since only the chief reads the checkpoint.
    """

    def __init__(self, strategy: Any, is_chief: bool):
        import tensorflow as tf

        self.strategy, self.is_chief = strategy, is_chief
        ctx = tf.distribute.get_replica_context

        @tf.function(reduce_retracing=True)
        def gather(row):
            # tf.identity places the value on this replica's device (a bare argument has none: "destinations
            # can not be empty")
            return strategy.run(lambda r: ctx().all_gather(tf.identity(r), axis=0), args=(row,))

        @tf.function(reduce_retracing=True)
        def total(values):
            return strategy.run(lambda v: ctx().all_reduce(tf.distribute.ReduceOp.SUM, [tf.identity(t) for t in v]),
                                args=(values,))

        self._gather, self._total = gather, total

    def _local(self, value: Any) -> Any:
        import tensorflow as tf

        return tf.nest.map_structure(lambda t: self.strategy.experimental_local_results(t)[0], value)

    def gather(self, row: list[float]):
        import numpy as np
        import tensorflow as tf

        if self.strategy.num_replicas_in_sync == 1:
            return np.asarray([row], np.float64)
        return self._local(self._gather(tf.constant([row], tf.float64))).numpy()

    def broadcast(self, variables: list[Any]) -> None:
        import tensorflow as tf

        if self.strategy.num_replicas_in_sync == 1 or not variables:
            return
        values = [tf.cast(tf.convert_to_tensor(v), tf.float64) for v in variables]
        if not self.is_chief:
            values = [tf.zeros_like(t) for t in values]
        for var, value in zip(variables, self._local(self._total(values)), strict=True):
            var.assign(tf.cast(value, var.dtype))
