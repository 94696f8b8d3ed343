"""Every artifact × every backend that can read it, on the same held-out images, against Keras.

Backend policy (documented in `edgeproof parity --help`):
- a backend listed in the format's `backends` (formats.py) that fails to load or run the file is a
  FAILURE ("error");
- any other backend of the same file family is tried too; if it cannot load or run the file the
  row is "unsupported" with its reason, NOT a failure (e.g. OpenCV DNN on an int8 QDQ model);
- if a backend runs the file, its outputs are judged by the same tolerance, listed or not:
  a backend that runs and gives wrong answers is a hazard whoever listed it;
- a backend whose package is not installed is "skipped" with the pip line.
Each artifact is fed the images preprocessed by ITS OWN embedded contract (runtime path), so wrong
normalization baked into metadata shows up as a failure.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeproof.contract import Preprocess
from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.formats import (
    BACKENDS,
    FORMATS,
    Format,
    Tolerance,
    artifacts_in,
    backend_installed,
    backends_for,
    format_of,
)
from edgeproof.parity.gate import Comparison, Failure, compare, override
from edgeproof.parity.metrics import percentile_ms

LATENCY_REPS = 20


@dataclass
class Images:
    paths: list[str]
    labels: np.ndarray | None
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    classes: list[str] | None = None  # the reference's class names, in output order (labels.txt)


@dataclass
class Row:
    artifact: str
    path: Path
    format: str | None
    backend: str
    status: str  # pass | fail | error | unsupported | skipped
    reason: str = ""
    size_bytes: int = 0
    comparison: Comparison | None = None
    latency_p50_ms: float | None = None
    failures: list[Failure] = field(default_factory=list)
    preds: np.ndarray | None = None  # top-1 per image (for the confusion matrix)
    probs: np.ndarray | None = None  # kept for the end-to-end comparison (not written to JSON)
    flipped: list[dict] = field(default_factory=list)  # images whose top-1 changed (parity.flips.attach)
    target: str | None = None  # the emulated target that ran it (parity.target_rows); None: this host
    vs_host: dict | None = None  # a target row: max|Δ| against the host row of the same file and backend

    def to_dict(self) -> dict:
        d = {"artifact": self.artifact, "path": str(self.path), "format": self.format, "backend": self.backend,
             "status": self.status, "reason": self.reason, "size_bytes": self.size_bytes,
             "latency_p50_ms": self.latency_p50_ms}
        if self.comparison is not None:
            d["metrics"] = self.comparison.to_dict()
        d["failures"] = [f.to_dict() for f in self.failures]
        if self.comparison is not None:
            d["flipped_images"] = self.flipped
        if self.target is not None:
            d["target"], d["vs_host"] = self.target, self.vs_host
        return d


class Batches:
    """Decoded images per preprocessing contract (artifacts with the same contract share one decode)."""

    def __init__(self, images: Images) -> None:
        self.images = images
        self._cache: dict[str, tuple[np.ndarray, list[str]]] = {}

    def get(self, pp: Preprocess) -> np.ndarray:
        from edgeproof.runtime.preprocess import load_batch

        key = str(sorted(pp.to_dict().items()))
        if key not in self._cache:
            x, used, skipped = load_batch(self.images.paths, pp)
            if skipped:
                raise unreadable(skipped)
            self._cache[key] = (x, used)
        return self._cache[key][0]


def unreadable(skipped: list[tuple[str, str]]) -> UsageError:
    """Parity judges every image or none: unreadable ones are an error naming the first (path, why)."""
    return UsageError(f"{len(skipped)} parity image(s) cannot be read, e.g. {skipped[0][0]}: {skipped[0][1]}; "
                      "remove or replace them, or pass --data DIR")


def find_artifacts(folder: Path) -> list[tuple[Path, Format | None]]:
    if not folder.is_dir():
        raise UsageError(f"artifacts folder '{folder}' does not exist; convert first with "
                         f"'edgeproof convert RUN_DIR -o {folder}' or pass --artifacts DIR")
    found = [(p, format_of(p)) for p in artifacts_in(folder)]
    if not found:
        raise UsageError(f"no .tflite or .onnx artifacts in '{folder}'; convert with 'edgeproof convert'")
    return found


def latency_p50_ms(model, x: np.ndarray, reps: int = LATENCY_REPS) -> float | None:
    if len(x) == 0:
        return None
    model.predict(x[:1])
    samples = []
    for i in range(min(reps, len(x))):
        t = time.perf_counter()
        model.predict(x[i:i + 1])
        samples.append(time.perf_counter() - t)
    return percentile_ms(samples, 50)


def evaluate(path: Path, fmt: Format | None, backend: str, batches: Batches, reference: np.ndarray,
             tol: Tolerance, listed: bool, verify: bool = True, timeout_s: float | None = None,
             trust_model: bool = False) -> Row:
    """Load one artifact with one backend, run it on the parity images, judge it.

    An artifact that does not match its manifest's sha256 (verify) is a failed row ('integrity'),
    whichever backend: the other artifacts are still judged and parity exits 1 naming it. So is one
    whose load and inference take longer than `timeout_s` (default parity.bounded.DEFAULT_TIMEOUT_S).
    """
    from edgeproof.parity.bounded import DEFAULT_TIMEOUT_S, EvaluationTimeout, call_bounded
    from edgeproof.runtime import LoadSpec, load

    def work(register):
        model = load(LoadSpec(path, backend=backend, verify=verify, trust_model=trust_model))
        register(model)
        try:
            x = batches.get(model.preprocess)
            return model.format, model.predict(x), latency_p50_ms(model, x)
        finally:
            model.close()

    limit = DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s
    try:
        model_format, probs, latency = call_bounded(work, limit)
    except EvaluationTimeout as exc:
        return timeout_row(path, fmt, backend, str(exc), limit)
    except Exception as exc:  # noqa: BLE001 - any load/run error is a row, judged by the policy above
        return error_row(path, fmt, backend, failure_of(exc), listed)
    if fmt is None and model_format in FORMATS:
        fmt = FORMATS[model_format]
    return judge(path, fmt, backend, probs, latency, reference, batches.images.labels, tol, listed,
                 classes=batches.images.classes)


def timeout_row(path: Path, fmt: Format | None, backend: str, message: str, limit: float) -> Row:
    """An evaluation over its time limit: a failure whether or not the backend is listed (it hangs, it is not
    unsupported)."""
    row = error_row(path, fmt, backend, (f"timeout: {message}", False), True)
    row.failures[0].metric, row.failures[0].limit = "timeout", f"{limit:g} s"
    return row


def failure_of(exc: BaseException) -> tuple[str, bool]:
    """(the one-line reason a row shows, whether it is an integrity failure) for a load/run error."""
    from edgeproof.errors import IntegrityError

    why = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}" if str(exc) else type(exc).__name__
    return why, isinstance(exc, IntegrityError)


def error_row(path: Path, fmt: Format | None, backend: str, failure: tuple[str, bool], listed: bool) -> Row:
    """The row of an artifact that could not be loaded or run (failure: from failure_of)."""
    why, integrity = failure
    name = path.name
    row = Row(artifact=name, path=path, format=fmt.name if fmt else None, backend=backend, status="error",
              reason=why, size_bytes=path.stat().st_size)
    if integrity:
        row.failures = [Failure("integrity", why, "sha256 as in manifest.json", f"refused: {why}", name, backend)]
    elif listed:
        row.failures = [Failure("load/run", why, "loads and runs", f"cannot load/run with listed backend "
                                f"'{backend}': {why}", name, backend)]
    else:
        row.status, row.reason = "unsupported", f"not in {row.format or 'this format'}'s backends: {short_reason(why)}"
    return row


_BOILERPLATE = re.compile(r"^(?:\w+: )?(?:'[^']*' |\S+ is not a valid \w+ model: )?")


def short_reason(why: str, limit: int = 90) -> str:
    """The cause in one short phrase for an 'unsupported' row: no error type, file name, boilerplate or advice
    ('InvalidModel: m.tflite is not a valid TFLite model: it loaded but ...; it may be truncated ...')."""
    text = _BOILERPLATE.sub("", why, count=1).split("; ")[0].split(" (")[0].strip()
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def judge(path: Path, fmt: Format | None, backend: str, probs: np.ndarray, latency_ms: float | None,
          reference: np.ndarray, labels: np.ndarray | None, tol: Tolerance, listed: bool,
          classes: list[str] | None = None) -> Row:
    """The row of an artifact that ran: its probabilities against the reference, by the tolerance, and
    (classes: the reference's names) its embedded class names against the reference's."""
    if probs.shape != reference.shape:
        exc = EdgeproofError(f"output shape {probs.shape} differs from the Keras model's {reference.shape}")
        return error_row(path, fmt, backend, failure_of(exc), listed)
    name = path.name
    row = Row(artifact=name, path=path, format=fmt.name if fmt else None, backend=backend, status="fail",
              size_bytes=path.stat().st_size)
    row.comparison = compare(reference, probs, labels, tol)
    mismatch = label_mismatch(embedded_labels(path), classes)
    if mismatch:  # same indices, other names: every class 'run' prints would be wrong
        row.comparison.failures.append(Failure("labels", mismatch, "the reference's class names", mismatch))
    row.latency_p50_ms = latency_ms
    row.preds, row.probs = probs.argmax(axis=1), probs
    for f in row.comparison.failures:
        f.artifact, f.backend = name, backend
    row.failures = list(row.comparison.failures)
    row.status = row.comparison.verdict
    if not listed:
        row.reason = "not in the format's backends list (judged anyway because it runs)"
    return row


def embedded_labels(path: Path) -> list[str] | None:
    """The class names the artifact carries (None without edgeproof metadata: judged by index only)."""
    from edgeproof.runtime.metadata import read_metadata

    try:
        meta = read_metadata(path)
    except (EdgeproofError, OSError):  # damaged metadata: the load judged it already (its row says why)
        return None
    return list(meta.labels) if meta is not None and meta.labels else None


def label_mismatch(labels: list[str] | None, classes: list[str] | None) -> str | None:
    """How the artifact's embedded class names differ from the reference's, or None."""
    if labels is None or classes is None or labels == list(classes):
        return None
    if len(labels) != len(classes):
        return f"embeds {len(labels)} labels; the reference has {len(classes)} classes"
    diff = [i for i, (a, b) in enumerate(zip(labels, classes)) if a != b]
    i = diff[0]
    return (f"embedded labels differ from the reference's at {len(diff)} of {len(classes)} indices: class {i} "
            f"is '{labels[i]}' in the artifact but '{classes[i]}' in the reference (labels permuted or replaced)")


@dataclass
class Planned:
    """One artifact x backend of the matrix; `skip` says why it is not run (then it is a 'skipped' row)."""

    path: Path
    fmt: Format | None  # from the file name
    backend: str
    judged_as: Format | None = None  # from the name or else the embedded metadata: whose tolerance applies
    listed: bool = False
    skip: str | None = None


def plan_matrix(artifacts: list[tuple[Path, Format | None]], backends: list[str] | None) -> list[Planned]:
    plan = []
    for path, fmt in artifacts:
        for b in backends_for(path, opt_in=backends is not None):  # a browser backend only where named
            if backends is not None and b not in backends:
                continue
            meta_fmt = fmt.name if fmt else _meta_format(path)
            entry = Planned(path, fmt, b, FORMATS[meta_fmt] if meta_fmt else None,
                            listed=meta_fmt is not None and BACKENDS[b].runs(FORMATS[meta_fmt]))
            if not backend_installed(b):
                entry.skip = f"backend not installed: {BACKENDS[b].install}"
            elif meta_fmt is None:
                entry.skip = ("unknown format (no model.<format><suffix> name and no edgeproof metadata); "
                              "no tolerance to judge it by")
            plan.append(entry)
    return plan


def run_matrix(artifacts: list[tuple[Path, Format | None]], batches: Batches, reference: np.ndarray,
               backends: list[str] | None, tol_flags: dict, progress=None, verify: bool = True,
               evaluate_fn=evaluate) -> list[Row]:
    """Every planned artifact x backend as a Row; evaluate_fn (evaluate's signature) judges one: the local
    evaluate, or the Ray engine's, which hands back what its actors computed."""
    rows: list[Row] = []
    plan = plan_matrix(artifacts, backends)
    task = progress.add_task("parity", total=len(plan)) if progress is not None else None
    for p in plan:
        if progress is not None:
            progress.update(task, description=f"parity {p.path.name} ({p.backend})")
        if p.skip is not None:
            rows.append(Row(p.path.name, p.path, p.fmt.name if p.fmt else None, p.backend, "skipped", p.skip,
                            p.path.stat().st_size))
        else:
            rows.append(evaluate_fn(p.path, p.judged_as, p.backend, batches, reference,
                                    override(p.judged_as.tolerance, **tol_flags), p.listed, verify=verify))
        if progress is not None:
            progress.advance(task)
    return rows


def _meta_format(path: Path) -> str | None:
    from edgeproof.runtime.metadata import read_metadata

    try:
        meta = read_metadata(path)
    except (EdgeproofError, OSError):  # damaged metadata: the format is unknown here, its row says why
        return None
    return meta.format if meta is not None and meta.format in FORMATS else None
