"""`edgeproof parity --engine ray`: parity's per-image work on Ray Data actors; judging, report and gate stay local.

Each actor (`ParityBatch`, a callable class) loads the Keras reference and every artifact x backend of the
matrix once, then for each batch of image paths runs the local engine's own functions: `load_batch` per
preprocessing contract, `reference.predict`, `Model.predict`, the first batch's `_latency` /
`latency_samples`, and `e2e.tf_side` (the TF-decode half of the drift check). Only probabilities and small
per-batch facts come back; the driver stacks them in input order (preserve_order) and hands them to the same
`runner.judge` / `runner.error_row` / `e2e.drift_report`, so rows, failures, e2e and the gate are the local
engine's. A file that cannot be read, or an artifact that cannot be loaded or run, is data in the result,
never an actor's death. Triage and --fix (rare: failing int8 artifacts only) run on the driver.
"""

from __future__ import annotations

import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeproof.parity import runner
from edgeproof.parity.bounded import EvaluationTimeout, call_bounded
from edgeproof.parity.metrics import percentile_ms


class ParityBatch:
    """Ray Data callable class: Keras + every planned artifact x backend, loaded once per actor."""

    def __init__(self, keras_path: str, pp, plan: list[tuple[int, str, str]], verify: bool, e2e: bool,
                 max_pixels: int, head: str = "probabilities", timeout_s: float | None = None,
                 trust_model: bool = False) -> None:
        from edgeproof.parity import reference
        from edgeproof.runtime import LoadSpec, load

        self.max_pixels = max_pixels  # the driver's limit, not this node's environment
        self.keras = reference.load_keras(keras_path, head, trust_model)
        self.pp, self.e2e, self.timeout_s = pp, e2e, timeout_s
        self.hung: set[int] = set()  # over --timeout once: not called again (its call may still be running)
        self.models: dict[int, object] = {}
        self.load_failures: dict[int, tuple[str, bool]] = {}
        for key, path, backend in plan:
            try:
                self.models[key] = load(LoadSpec(path, backend=backend, verify=verify, trust_model=trust_model))
            except Exception as exc:  # noqa: BLE001 - a row of the report, as locally
                self.load_failures[key] = runner.failure_of(exc)
        self.keys = [k for k, _, _ in plan]

    def __call__(self, rows: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from edgeproof.parity import reference
        from edgeproof.runtime.preprocess import load_batch

        paths = [str(p) for p in rows["path"]]
        n, first = len(paths), int(rows["seq"][0]) == 0
        out: dict[str, list] = {"ref": [b""] * n, "tf": [b""] * n, **{f"p{k}": [b""] * n for k in self.keys}}
        info: dict = {"failures": {str(k): f for k, f in self.load_failures.items()}, "latency": {}, "timeouts": {}}
        x_ref, _, skipped = load_batch(paths, self.pp, self.max_pixels)
        why = dict(skipped)
        if not skipped:  # an unreadable image fails the whole run (as locally): no predictions needed then
            ref = reference.predict(self.keras, x_ref)
            out["ref"] = [r.tobytes() for r in ref]
            if first:
                info["reference_latency_ms"] = percentile_ms(reference.latency_samples(self.keras, x_ref), 50)
            cache = {_pp_key(self.pp): x_ref}
            for key, model in self.models.items():
                if key in self.hung:
                    continue
                x = cache.get(_pp_key(model.preprocess))
                if x is None:
                    x = cache.setdefault(_pp_key(model.preprocess),
                                         load_batch(paths, model.preprocess, self.max_pixels)[0])
                try:
                    probs, latency = call_bounded(functools.partial(_predict, model, x, first), self.timeout_s)
                except EvaluationTimeout as exc:
                    self.hung.add(key)
                    info["timeouts"][str(key)] = str(exc)
                    continue
                except Exception as exc:  # noqa: BLE001 - that artifact's row says why
                    info["failures"][str(key)] = runner.failure_of(exc)
                    continue
                if first:
                    info["latency"][str(key)] = latency
                out[f"p{key}"] = [p.tobytes() for p in probs]
            if self.e2e:
                from edgeproof.parity.e2e import tf_side

                ref_tf, used, tf_skipped, pix = tf_side(self.keras, paths, self.pp, x_ref)
                for i, r in zip(used, ref_tf):
                    out["tf"][i] = np.asarray(r, np.float32).tobytes()
                info["tf_skipped"], info["pix"] = tf_skipped, pix
        columns = {"seq": np.asarray(rows["seq"], np.int64), "why": np.asarray([why.get(p, "") for p in paths],
                                                                                 dtype=object),
                   "info": np.asarray([json.dumps(info)] + [""] * (n - 1), dtype=object)}
        return {**columns, **{k: np.asarray(v, dtype=object) for k, v in out.items()}}


def _predict(model, x: np.ndarray, first: bool, register) -> tuple[np.ndarray, float | None]:
    """One batch through one artifact (call_bounded's work); the first batch also measures latency."""
    register(model)
    return np.asarray(model.predict(x), np.float32), runner.latency_p50_ms(model, x) if first else None


def _pp_key(pp) -> str:
    return str(sorted(pp.to_dict().items()))  # runner.Batches' cache key: one decode per contract


@dataclass
class RayParity:
    """What the actors computed, in input order, served to the local judging code."""

    labels: np.ndarray | None
    reference: np.ndarray
    reference_latency_ms: float | None
    keys: dict[tuple[str, str], int]
    probs: dict[int, np.ndarray] = field(default_factory=dict)
    latency: dict[int, float | None] = field(default_factory=dict)
    failures: dict[int, tuple[str, bool]] = field(default_factory=dict)
    timeouts: dict[int, str] = field(default_factory=dict)
    timeout_s: float | None = None
    ref_tf: np.ndarray | None = None
    tf_used: list[int] = field(default_factory=list)
    tf_skipped: list[tuple[str, str]] = field(default_factory=list)
    pix: dict = field(default_factory=dict)
    engine: dict = field(default_factory=dict)

    def evaluate(self, path: Path, fmt, backend: str, batches, reference, tol, listed: bool, verify: bool = True):
        """runner.evaluate's signature and Row, from the actors' results."""
        key = self.keys[(str(path), backend)]
        if key in self.timeouts:
            return runner.timeout_row(path, fmt, backend, self.timeouts[key], self.timeout_s or 0.0)
        if key in self.failures:
            return runner.error_row(path, fmt, backend, self.failures[key], listed)
        return runner.judge(path, fmt, backend, self.probs[key], self.latency.get(key), reference, self.labels,
                            tol, listed, classes=batches.images.classes)

    def preprocessing(self, rows) -> dict:
        from edgeproof.parity.e2e import drift_report

        ref_tf = self.ref_tf if self.ref_tf is not None else np.zeros((0, 0), np.float32)
        return drift_report(ref_tf, self.tf_used, self.tf_skipped, self.pix, self.reference, self.labels, rows)


def predict_on_ray(run, images, artifacts, backends, verify: bool, e2e: bool, address: str | None,
                   workers: int | None, prog, timeout_s: float | None = None, trust_model: bool = False) -> RayParity:
    """One Ray Data pass over the parity images: reference, every artifact x backend, the TF-decode side.

    timeout_s bounds each artifact's inference on each batch (parity --timeout; the local engine bounds its
    whole evaluation): one over it is the same failed 'timeout' row."""
    from edgeproof.parity.bounded import DEFAULT_TIMEOUT_S
    from edgeproof.parity.e2e import merge_pixel_stats
    from edgeproof.runtime import image_check
    from edgeproof.scaleout.ray_cluster import (
        ROWS_PER_TASK,
        engine_error,
        import_ray,
        map_on_actors,
        ray_session,
    )

    ray = import_ray("parity --engine ray")
    limit = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    plan = [p for p in runner.plan_matrix(artifacts, backends) if p.skip is None]
    keys = {(str(p.path), p.backend): i for i, p in enumerate(plan)}
    rows = [{"seq": i, "path": str(p)} for i, p in enumerate(images.paths)]
    refs, tfs, skipped, infos = [], [], [], []
    probs: dict[int, list[bytes]] = {k: [] for k in keys.values()}
    with ray_session(address, num_cpus=workers or os.cpu_count() or 1) as session:
        actors = max(1, min(workers or session.cpus, math.ceil(len(rows) / ROWS_PER_TASK)))
        ds = map_on_actors(ray.data.from_items(rows, override_num_blocks=math.ceil(len(rows) / ROWS_PER_TASK)),
                           ParityBatch, actors, 1,
                           {"keras_path": str(run.model_path), "pp": run.preprocess, "head": run.head,
                            "plan": [(keys[(str(p.path), p.backend)], str(p.path), p.backend) for p in plan],
                            "verify": verify, "e2e": e2e, "max_pixels": image_check.max_pixels(),
                            "timeout_s": limit, "trust_model": trust_model})
        task = prog.add_task(f"parity on Ray ({actors} actor(s))", total=len(rows))
        try:
            for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for j in range(len(out["seq"])):
                    if out["why"][j]:
                        skipped.append((rows[int(out["seq"][j])]["path"], str(out["why"][j])))
                    refs.append(out["ref"][j])
                    tfs.append(out["tf"][j])
                    for k in probs:
                        probs[k].append(out[f"p{k}"][j])
                    if out["info"][j]:
                        infos.append(json.loads(out["info"][j]))
                prog.advance(task, len(out["seq"]))
        except Exception as exc:  # noqa: BLE001 - every Ray failure becomes one line (engine_error)
            raise engine_error(exc, session) from None
    if skipped:
        raise runner.unreadable(skipped)
    first = infos[0] if infos else {}
    done = RayParity(labels=images.labels, reference=_stack(refs), keys=keys,
                     reference_latency_ms=first.get("reference_latency_ms"),
                     engine={"name": "ray", "actors": actors, **session.to_dict()})
    done.timeout_s = limit
    for info in infos:  # the first failure of an artifact x backend, in input order, as one local call would
        for k, f in info["failures"].items():
            if int(k) not in done.timeouts:
                done.failures.setdefault(int(k), (f[0], bool(f[1])))
        for k, msg in info.get("timeouts", {}).items():
            if int(k) not in done.failures:
                done.timeouts.setdefault(int(k), msg)
    for k, col in probs.items():
        if k not in done.failures and k not in done.timeouts:
            done.probs[k] = _stack(col)
            done.latency[k] = first.get("latency", {}).get(str(k))
    if e2e:
        done.tf_used = [i for i, b in enumerate(tfs) if b]
        done.ref_tf = _stack([tfs[i] for i in done.tf_used]) if done.tf_used else None
        done.tf_skipped = [tuple(s) for info in infos for s in info.get("tf_skipped", [])]
        done.pix = merge_pixel_stats([info["pix"] for info in infos if "pix" in info])
    return done


def _stack(rows: list[bytes]) -> np.ndarray:
    return np.stack([np.frombuffer(b, np.float32) for b in rows]) if rows else np.zeros((0, 0), np.float32)
