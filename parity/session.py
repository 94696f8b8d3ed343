"""One parity run: reference, artifact × backend matrix, preprocessing drift, triage, report files."""

from __future__ import annotations

import functools
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeproof.formats import BACKENDS
from edgeproof.parity.gate import Failure
from edgeproof.progress import Progress, ProgressCallback


@dataclass
class ParityReport:
    run_dir: Path
    artifacts_dir: Path
    images_source: str
    n_images: int
    labelled: bool
    reference: dict
    rows: list = field(default_factory=list)
    e2e: dict | None = None
    triage: list = field(default_factory=list)
    tolerance_flags: dict = field(default_factory=dict)
    out_dir: Path | None = None
    files: dict = field(default_factory=dict)
    seconds: float = 0.0
    labels: list[str] = field(default_factory=list)
    y_true: np.ndarray | None = None
    unverified: list[Failure] = field(default_factory=list)  # artifacts no backend could judge
    promoted: list[dict] = field(default_factory=list)  # fixes put in place by --promote (parity.promote)
    engine: dict | None = None  # --engine ray: the cluster and actors that did the per-image work

    @property
    def failures(self) -> list[Failure]:
        return [f for r in self.rows for f in r.failures] + self.unverified

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "run_dir": str(self.run_dir), "artifacts_dir": str(self.artifacts_dir),
            "images": {"source": self.images_source, "n": self.n_images, "labelled": self.labelled},
            "reference": self.reference,
            "tolerance_overrides": {k: v for k, v in self.tolerance_flags.items() if v is not None},
            "results": [r.to_dict() for r in self.rows],
            "failures": [f.to_dict() for f in self.failures],
            "end_to_end": self.e2e,
            "triage": [t.to_dict() for t in self.triage],
            "promoted": self.promoted,
            "files": {k: str(v) for k, v in self.files.items()},
            "seconds": round(self.seconds, 2),
            **({"engine": self.engine} if self.engine is not None else {}),
        }


def run_parity(run_dir: str | Path, artifacts_dir: str | Path | None = None, data_dir: str | Path | None = None,
               split: str = "test", backends: list[str] | None = None, tol_flags: dict | None = None,
               triage: bool = True, fix: bool = False, out_dir: str | Path | None = None, e2e: bool = True,
               progress: ProgressCallback | bool | None = None, write: bool = True, verify: bool = True, engine: str = "local",
               address: str | None = None, workers: int | None = None,
               timeout_s: float | None = None, promote: bool = False, trust_model: bool = False,
               prefer: str = "balanced", target: str | None = None, keras_child: bool = False) -> ParityReport:
    """Judge every artifact against the run's Keras model; write parity.json/.md and PNGs to out_dir.

    promote (with fix): the first passing fix of each failing int8 artifact replaces it (parity.promote), under
    its own format's name; prefer ("balanced", "fidelity", "speed"): what a fix more than 2x slower than the
    artifact it would replace may do (parity.promote.acceptor).
    engine "ray": the per-image work (decode, Keras reference, every artifact x backend, the TF-decode side of
    the drift check) runs on Ray Data actors (parity.ray_engine); the judging, report and gate are these.
    target: also run each artifact's listed backends in that emulated target (edgeproof.targets), on the same
    preprocessed tensors: rows `backend@TARGET`, judged by the same gate (parity.target_rows).
    keras_child (engine "local"): the Keras side (reference, its latency, the TF decode of the drift check) runs in
    a short-lived child process (parity.keras_side), so this one never imports TensorFlow unless triage or a fix
    needs the model (the demo: its parity process then holds the runtimes only).
    progress: a callback for progress events (edgeproof.progress)."""
    from edgeproof.convert.source import open_for_parity
    from edgeproof.parity import data, flips, reference, runner
    from edgeproof.parity.gate import check_flags
    from edgeproof.parity.promote import PREFER

    if prefer not in PREFER:
        from edgeproof.errors import UsageError

        raise UsageError(f"prefer {prefer!r} is not valid; give one of: {', '.join(PREFER)}")
    tol_flags = check_flags(tol_flags or {})  # before the run folder is read, not after minutes of work
    t0 = time.perf_counter()
    run = open_for_parity(run_dir, artifacts_dir, trust_model)  # a run folder, or a bare model with its artifacts' metadata
    art_dir = Path(artifacts_dir) if artifacts_dir else run.root / "artifacts"
    out = Path(out_dir) if out_dir else run.root / "parity"
    if write:  # before minutes of work, not after them
        from edgeproof.outdir import ensure_writable_dir

        ensure_writable_dir(out)
    artifacts = runner.find_artifacts(art_dir)  # fail fast, before TensorFlow loads
    sysroot = _open_target(target) if target else None
    if run.bare and not data_dir:
        from edgeproof.errors import UsageError

        raise UsageError(f"'{run.model_path.name}' is a bare model with no held-out split; pass --data DIR (class "
                         "subfolders named like its labels give accuracy, a flat folder agreement only)")
    images = data.from_dir(data_dir, run.labels, split) if data_dir else data.from_run(run, split)
    images.classes = list(run.labels)  # an artifact whose class names differ fails, even with the same indices
    batches = runner.Batches(images)
    y = images.labels

    with Progress(progress) as prog:
        if engine == "ray":
            from edgeproof.parity.ray_engine import predict_on_ray

            done = predict_on_ray(run, images, artifacts, backends, verify, e2e, address, workers, prog,
                                  timeout_s=timeout_s, trust_model=trust_model)
            ref, ref_lat, keras_model = done.reference, done.reference_latency_ms, None
            _check_classes(ref, run)
            rows = runner.run_matrix(artifacts, batches, ref, backends, tol_flags, prog, verify=verify,
                                     evaluate_fn=done.evaluate)
            pre = done.preprocessing(rows) if e2e else None
        else:
            from edgeproof.parity import keras_side

            task = prog.add_task("Keras reference", total=1)
            x_ref = batches.get(run.preprocess)
            side_args = (run.model_path, run.head, trust_model, x_ref, images.paths if e2e else None, run.preprocess)
            if keras_child:  # TensorFlow only in a short-lived child: this process loads every runtime next
                keras_model, side = None, keras_side.compute_in_child(*side_args)
            else:
                keras_model = reference.load_keras(run.model_path, run.head, trust_model)
                side = keras_side.compute(*side_args, keras_model=keras_model)
            ref, ref_lat = side.reference, side.latency_ms
            prog.advance(task)
            _check_classes(ref, run)
            rows = runner.run_matrix(artifacts, batches, ref, backends, tol_flags, prog, verify=verify,
                                     evaluate_fn=functools.partial(runner.evaluate, timeout_s=timeout_s,
                                                                   trust_model=trust_model))
            pre = None
            if e2e:
                from edgeproof.parity import e2e as e2e_mod

                t = prog.add_task("preprocessing drift (TF vs OpenCV)", total=1)
                pre = e2e_mod.drift_report(*side.tf_side, ref, y, rows)
                prog.advance(t)
        if sysroot is not None:
            from edgeproof.parity.target_rows import interleave, target_rows

            rows = interleave(rows, target_rows(sysroot, artifacts, batches, ref, backends, tol_flags, rows, prog,
                                                verify, timeout_s, trust_model))
        ref_info = {"model": str(run.model_path), "latency_p50_ms": ref_lat, "n": len(ref),
                    "accuracy": float(np.mean(ref.argmax(1) == y)) if y is not None else None,
                    "correct": int(np.sum(ref.argmax(1) == y)) if y is not None else None}
        flips.attach(rows, ref, images, list(run.labels))
        report = ParityReport(run_dir=run.root, artifacts_dir=art_dir, images_source=images.source,
                              n_images=len(ref), labelled=y is not None, reference=ref_info, rows=rows,
                              tolerance_flags=tol_flags, out_dir=out, labels=list(run.labels), y_true=y,
                              unverified=_unverified(rows), engine=done.engine if engine == "ray" else None)
        if pre is not None:
            from edgeproof.parity import e2e as e2e_mod

            report.e2e = {"preprocessing": pre, **e2e_mod.dominance(pre, rows)}
        if e2e and engine != "ray" and any(BACKENDS[b].opt_in for b in backends or ()):
            from edgeproof.parity.browser_pre import page_preprocessing_drift

            t = prog.add_task("preprocessing drift (the page's JavaScript vs OpenCV)", total=1)
            if keras_model is None:  # keras_child: the page's side needs the model here
                keras_model = reference.load_keras(run.model_path, run.head, trust_model)
            report.e2e = {**(report.e2e or {}), "page_preprocessing": page_preprocessing_drift(
                keras_model, images.paths, run.preprocess, x_ref, ref, y, [p for p, _ in artifacts])}
            prog.advance(t)
        if triage:
            if keras_model is None and _triage_todo(rows):  # Ray: the triage (and --fix) runs here
                keras_model = reference.load_keras(run.model_path, run.head, trust_model)
            report.triage = _triage(rows, keras_model, run, art_dir, batches, ref, tol_flags, fix, out, prog, prefer)
        if promote and fix:  # a passing fix replaces its artifact; the gate then judges what is in place
            from edgeproof.parity.promote import promote_passing

            def rerun(arts):
                new = runner.run_matrix(arts, batches, ref, backends, tol_flags, None, verify=verify,
                                        evaluate_fn=functools.partial(runner.evaluate, trust_model=trust_model))
                flips.attach(new, ref, images, list(run.labels))
                return new

            report.promoted = promote_passing(report, art_dir, rerun, prefer)
            report.unverified = _unverified(report.rows)
    report.seconds = time.perf_counter() - t0
    if write:
        from edgeproof.parity import report as report_mod

        report.files = report_mod.write_all(report, out)
    return report


def _open_target(name: str):
    """The built sysroot of an emulated target, checked before minutes of work (UsageError when it cannot run)."""
    from edgeproof.errors import UsageError
    from edgeproof.targets.sysroot import emulation_problem, open_target

    sysroot = open_target(name)
    problem = emulation_problem()
    if problem:
        raise UsageError(f"--target {name}: {problem}")
    return sysroot


def _check_classes(ref: np.ndarray, run) -> None:
    if ref.shape[1] != len(run.labels):
        from edgeproof.errors import UsageError

        raise UsageError(f"the Keras model outputs {ref.shape[1]} classes but its labels list {len(run.labels)}; "
                         "the run folder (or the artifacts' metadata) is inconsistent")


def _unverified(rows) -> list[Failure]:
    """An artifact that every tried backend skipped or could not load proves nothing: that fails the gate."""
    by_artifact: dict[str, list] = {}
    for r in rows:
        by_artifact.setdefault(r.artifact, []).append(r)
    out = []
    for name, rs in by_artifact.items():
        if any(r.comparison is not None or r.failures or r.status == "replaced" for r in rs):
            continue
        why = "; ".join(f"{r.backend}: {r.status} ({r.reason[:120]})" for r in rs)
        out.append(Failure("verified", "no backend ran it", "at least one backend", f"not verified: {why}",
                           name, ",".join(r.backend for r in rs)))
    return out


def _triage_todo(rows) -> list:
    """One triage per failing artifact (its first failing backend)."""
    from edgeproof.parity.triage import TRIAGE_FORMATS

    todo, seen = [], set()
    for r in rows:
        if r.status in ("fail", "error") and r.format in TRIAGE_FORMATS and r.artifact not in seen \
                and r.comparison is not None and r.target is None:  # triage runs on this host
            seen.add(r.artifact)
            todo.append(r)
    return todo


def _triage(rows, keras_model, run, art_dir, batches, ref, tol_flags, fix, out, prog, prefer: str = "balanced") -> list:
    from edgeproof.formats import FORMATS
    from edgeproof.parity.gate import override
    from edgeproof.parity.triage import triage_artifact

    todo = _triage_todo(rows)
    if not todo:
        return []
    task = prog.add_task("quantization triage", total=len(todo))
    results = []
    from edgeproof.parity.qat_rung import QatRung

    qat = QatRung(run, keras_model, None, seed=0) if fix else None  # one fine-tune for every artifact
    with tempfile.TemporaryDirectory(prefix="edgeproof-triage-") as work:  # an ONNX source's SavedModel, made once
        for r in todo:
            prog.update(task, description=f"triage {r.artifact}")
            tol = override(FORMATS[r.format].tolerance, **tol_flags)
            also = tuple(x.backend for x in rows if x.artifact == r.artifact and x.backend != r.backend
                         and x.status in ("pass", "fail") and x.target is None)  # the other backends that judged it
            results.append(triage_artifact(r, keras_model, run, art_dir, batches, ref, tol, fix, out, also, prefer,
                                           Path(work), qat))
            prog.advance(task)
    return results
