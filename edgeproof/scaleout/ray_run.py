"""`edgeproof run --engine ray`: the local pipeline's per-image work, scheduled by Ray Data.

The driver lists the inputs exactly as the local engine does (`open_source`: folder, glob, list file or
image, with the same up-front errors), builds `ray.data.from_items` of their paths, and maps batches
through `ClassifyBatch`, a callable class: each actor loads the model once from the driver's LoadSpec and
runs the local pipeline's own per-image work on each input (`FileSource` for video expansion and known
errors, `runtime.per_image.Session` for the pre-decode check + decode + preprocess and for classifying a
batch under the watchdog). `RayEngine` is what `runtime.session.run_session(engine=)` takes. Bad
files come back as rows with their skip reason, so no input can kill an actor. Ray Data runs with
preserve_order, so rows come back in input order and the driver numbers them and builds the same Summary as
the local engine; each row also names its worker, for throughput per worker.

Paths, not bytes (`from_items`, not `read_binary_files`): the pre-decode check must see the file itself
(missing, a directory, a FIFO, a broken symlink, permissions) to give the local engine's reasons, and
read_binary_files fails its read task on such a file. On a cluster the model and the images must be at
the same path on every node (a shared filesystem), as for any Ray Data job reading local paths.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgeproof.errors import UsageError
from edgeproof.runtime.per_image import Session
from edgeproof.runtime.pipeline import Result, Summary, stop_reason
from edgeproof.runtime.session import RunOptions
from edgeproof.runtime.sources import FileSource, Source, StopReason
from edgeproof.runtime.spec import LoadSpec

log = logging.getLogger(__name__)

WORKER_DIED_EXIT = 70  # an actor whose inference outlived --infer-timeout ends itself with this code


@dataclass
class WorkerStats:
    worker: str
    count: int = 0
    skipped: int = 0
    busy_s: float = 0.0

    def to_dict(self) -> dict:
        return {"worker": self.worker, "count": self.count, "skipped": self.skipped, "busy_s": round(self.busy_s, 4),
                "images_per_s": round(self.count / self.busy_s, 2) if self.busy_s > 0 else 0.0}


class ClassifyBatch:
    """Ray Data callable class: one model per actor; a batch of input rows -> a batch of result rows.

    One input row is one path; a video file gives one output row per frame (as locally)."""

    def __init__(self, spec: LoadSpec, top_k: int, batch: int, max_pixels: int, infer_timeout: float) -> None:
        from edgeproof.runtime.model import load

        # max_pixels: the driver's limit (flag or env), not this node's env
        self.session = Session(load(spec), top_k, _actor_watchdog(infer_timeout, str(spec.path)), max_pixels)
        self.batch = max(1, batch)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        names, whys, pre_ms, seqs = [], [], [], []
        ready: list[tuple[int, np.ndarray]] = []  # (output row, preprocessed input)
        for seq, path, error in zip(rows["seq"], rows["path"], rows["error"]):
            p = Path(str(path))
            source = FileSource(str(path), "folder", [p], errors={p: str(error)} if error else None,
                                max_pixels=self.session.max_pixels)
            for item in source:  # the image itself, or each frame of a video, or the known error
                item, x, _, why, ms = self.session.decode(item)
                if why is None:
                    ready.append((len(names), x))
                names.append(item.name)
                whys.append(why or "")
                pre_ms.append(ms)
                seqs.append(int(seq))
        scores: list[bytes] = [b""] * len(names)
        tops = [""] * len(names)
        latency = [0.0] * len(names)
        for i in range(0, len(ready), self.batch):
            chunk = ready[i:i + self.batch]
            out, tops_, per = self.session.classify(np.stack([c[1] for c in chunk]), names[chunk[0][0]])
            for (row, _), top, s in zip(chunk, tops_, out):
                tops[row] = json.dumps([[lb, float(v)] for lb, v in top])
                scores[row] = np.asarray(s, np.float32).tobytes()
                latency[row] = per
        busy = (time.perf_counter() - t0) / max(1, len(names))
        return {"seq": np.asarray(seqs, np.int64), "name": np.asarray(names, dtype=object),
                "why": np.asarray(whys, dtype=object), "topk": np.asarray(tops, dtype=object),
                "scores": np.asarray(scores, dtype=object), "latency_ms": np.asarray(latency, np.float64),
                "preprocess_ms": np.asarray(pre_ms, np.float64), "worker": np.asarray([self.worker] * len(names),
                                                                                     dtype=object),
                "busy_s": np.full(len(names), busy, np.float64)}


def _actor_watchdog(seconds: float, model_path: str):
    """--infer-timeout in an actor: a native call cannot be interrupted, so the actor process ends (the driver
    then ends the run with one line; actors are not restarted, so a hanging model cannot loop forever)."""
    if not seconds:
        return None
    from edgeproof.runtime.watchdog import Watchdog

    def on_timeout(what: str, limit: float) -> None:
        log.error("%s: inference on %s did not finish within %g s; ending this Ray worker", model_path, what, limit)
        os._exit(WORKER_DIED_EXIT)

    return Watchdog(seconds, on_timeout)


def file_inputs(source: Source) -> FileSource:
    """The engine runs over files; a camera, stream or single video stays on the local engine."""
    if not isinstance(source, FileSource):
        source.close()
        raise UsageError(f"--engine ray runs over files (a folder, glob, list file or image); '{source.spec}' is a "
                         f"{source.kind}: run it without --engine ray")
    return source


def run_on_ray(spec: LoadSpec, source: FileSource, on_result: Callable[[Result], object], *, batch: int = 1,
               top_k: int = 5, limit: int | None = None, workers: int | None = None, address: str | None = None,
               infer_timeout: float = 0.0) -> tuple[Summary, dict]:
    """Classify every input of `source` on Ray; on_result gets the Results in input order, as locally.

    Returns the Summary (the local engine's fields and meaning) and the engine's own figures: the cluster,
    the actor count, and count / busy seconds / images per second for each worker."""
    from edgeproof.runtime import image_check
    from edgeproof.scaleout.ray_cluster import (
        ROWS_PER_TASK,
        engine_error,
        import_ray,
        map_on_actors,
        ray_session,
    )

    ray = import_ray()
    if workers is not None and workers < 1:
        raise UsageError(f"--workers must be >= 1; got {workers}")
    cpus_per_actor = spec.threads or 1
    spec = replace(spec, threads=cpus_per_actor)
    rows = [{"seq": i, "path": str(p), "error": source.errors.get(p, "")} for i, p in enumerate(source.paths)]
    summary = Summary(source=source.spec, kind=source.kind)
    per_worker: dict[str, WorkerStats] = {}
    with ray_session(address, num_cpus=workers * cpus_per_actor if workers else os.cpu_count()) as session:
        actors = workers or max(1, session.cpus // cpus_per_actor)
        actors = max(1, min(actors, math.ceil(len(rows) / ROWS_PER_TASK)))
        ds = map_on_actors(ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / ROWS_PER_TASK)),
                           ClassifyBatch, actors, cpus_per_actor,
                           {"spec": spec, "top_k": top_k, "batch": batch, "max_pixels": image_check.max_pixels(source.max_pixels),
                            "infer_timeout": infer_timeout})
        t0 = time.perf_counter()
        batches = ds.iter_batches(batch_size=None, batch_format="numpy")
        index = 0
        try:
            for out in batches:
                for j in range(len(out["seq"])):
                    if limit is not None and summary.count >= limit:
                        raise _LimitReached
                    name, why, worker = str(out["name"][j]), str(out["why"][j]), str(out["worker"][j])
                    stats = per_worker.setdefault(worker, WorkerStats(worker))
                    stats.busy_s += float(out["busy_s"][j])
                    if why:
                        summary.skip(name, why)
                        stats.skipped += 1
                    else:
                        top = [(lb, s) for lb, s in json.loads(out["topk"][j])]
                        ms = float(out["latency_ms"][j])
                        summary.count += 1
                        summary.latencies_ms.add(ms)
                        summary.preprocess_ms.add(float(out["preprocess_ms"][j]))
                        stats.count += 1
                        result = Result(index, name, top, np.frombuffer(out["scores"][j], np.float32), ms)
                        if on_result(result) is False:
                            source.stop_reason = StopReason.BY_USER
                            raise _LimitReached
                    index += 1
        except _LimitReached:
            pass
        except KeyboardInterrupt:
            summary.interrupted = True
        except Exception as exc:  # noqa: BLE001 - every Ray failure becomes one line (engine_error)
            raise engine_error(exc, session, infer_timeout) from None
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()
            summary.seconds = time.perf_counter() - t0
    summary.stopped = stop_reason(summary, limit, source)
    engine = {"name": "ray", "actors": actors, "cpus_per_actor": cpus_per_actor, **session.to_dict(),
              "per_worker": [w.to_dict() for w in sorted(per_worker.values(), key=lambda w: w.worker)]}
    return summary, engine


class _LimitReached(Exception):
    pass


@dataclass(frozen=True)
class RayEngine:
    """`run_session(..., engine=RayEngine(workers, address))`: the per-image work on Ray Data actors."""

    workers: int | None = None  # actors (default: one per CPU of the local Ray or the cluster)
    address: str | None = None  # a cluster to join (default $RAY_ADDRESS, else a local Ray for this run)

    def run(self, spec: LoadSpec, source, on_result: Callable[[Result], object],
            options: RunOptions) -> tuple[Summary, dict]:
        return run_on_ray(spec, file_inputs(source), on_result, batch=options.batch, top_k=options.top_k,
                          limit=options.limit, workers=self.workers, address=self.address,
                          infer_timeout=options.infer_timeout)
