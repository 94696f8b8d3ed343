"""Run benchmark configurations (model x backend x threads), each in its own subprocess by default.

A fresh process per configuration makes peak RSS (VmHWM) belong to that one model and backend,
and keeps one runtime's thread pools from disturbing the next. The child is this module:
``python -m edgeproof.bench.runner`` reads a JSON spec on stdin and prints one result line.
TensorFlow is imported only in a child benchmarking a .keras model.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgeproof.bench import stats
from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.formats import BACKENDS, SUFFIX_FAMILY, artifacts_in, backend_installed, backends_for, format_of
from edgeproof.runtime.spec import LoadSpec

RESULT_MARK = "EDGEPROOF_BENCH_RESULT "
MODEL_SUFFIXES = tuple(SUFFIX_FAMILY)
KERAS_MAX_RUNS = 200
TIMING_BLOCK = 10  # timed calls per contender per turn (see stats.time_interleaved: thread pools time each other)


@dataclass
class BenchSpec:
    """One configuration to benchmark. ``kind``: "artifact" (edgeproof runtime) or "keras"."""

    model: str
    backend: str | None = None
    threads: int | None = None
    batch: int = 1
    runs: int = 200
    warmup: int = 20
    min_seconds: float = 0.0
    seed: int = 0
    device: str | None = None
    allow_fallback: bool = False
    baseline: bool = True
    source: str | None = None
    kind: str = "artifact"
    verify: bool = True  # check the sha256 in manifest.json before loading (--no-verify: False)
    trust_model: bool = False  # --trust-model: run a model whose ops reach files, Python or the network

    def label(self) -> str:
        fmt = self.format_name()
        return f"{fmt} / {self.backend or 'default'} / {self.threads or 'default'} thr"

    def load_spec(self) -> LoadSpec:
        """How the child process opens this artifact (the bench flags that are load options)."""
        return LoadSpec(self.model, backend=self.backend, threads=self.threads, device=self.device,
                        allow_fallback=self.allow_fallback, verify=self.verify, trust_model=self.trust_model)

    def format_name(self) -> str:
        if self.kind == "keras":
            return "keras"
        fmt = format_of(self.model)
        return fmt.name if fmt else Path(self.model).name


# ---------------------------------------------------------------- planning (parent side)

def available_backends() -> list[str]:
    """Backends whose package is importable here (checked without importing it)."""
    return [name for name in BACKENDS if backend_installed(name)]


def expand_models(paths: list[str]) -> list[Path]:
    """Files as given; a folder contributes its .tflite/.onnx files (sorted in format-table order)."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found = artifacts_in(p)
            if not found:
                raise UsageError(f"folder '{p}' holds no .tflite or .onnx model; give model files or an "
                                 "artifacts folder made by 'edgeproof convert'")
            out.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in MODEL_SUFFIXES + (".keras",):
                raise UsageError(f"cannot benchmark '{p}': unknown model suffix '{p.suffix or '(none)'}'; "
                                 f"valid: {', '.join(MODEL_SUFFIXES)} (a .keras model goes in --keras)")
            out.append(p)
        else:
            raise UsageError(f"model '{p}' does not exist; give a .tflite/.onnx file or an artifacts folder")
    return out


def backends_for_model(path: Path, wanted: list[str] | None, available: list[str]) -> list[str]:
    """Backends to run ``path`` on: the format's backends (or the family's), filtered.

    wanted None: the preferred available backend only; ["all"]: every available one that reads it;
    explicit names: those that read it (names that cannot read this file are skipped).
    """
    fmt = format_of(path)
    able = list(fmt.backends) if fmt else backends_for(path)
    usable = [b for b in able if b in available]
    if wanted is None:
        return usable[:1]
    if "all" in wanted:
        return usable
    able += [b for b in backends_for(path, opt_in=True) if BACKENDS[b].opt_in and (fmt is None or BACKENDS[b].runs(fmt))]
    return [b for b in wanted if b in able]


def plan(models: list[str], backends: list[str] | None, threads: list[int | None],
         **common) -> tuple[list[BenchSpec], list[str]]:
    """Every model x backend x threads configuration in a stable order, plus why any model was skipped.

    With ``device`` set and no explicit backends, the device profile picks the backend (spec.backend None).
    """
    available = available_backends()
    for b in backends or []:
        if b != "all" and b not in BACKENDS:
            raise UsageError(f"unknown backend '{b}'; valid backends: {', '.join(BACKENDS)} or 'all'")
        if b != "all" and b not in available:
            raise UsageError(f"backend '{b}' is not installed here; install it with: {BACKENDS[b].install}")
    specs: list[BenchSpec] = []
    skipped: list[str] = []
    for path in expand_models(models):
        if path.suffix.lower() == ".keras":
            # Keras is ~100x slower per call: cap its runs so the baseline does not dominate the suite.
            kruns = min(common.get("runs", KERAS_MAX_RUNS), KERAS_MAX_RUNS)
            kcommon = {**common, "runs": kruns, "min_seconds": 0.0}
            specs.extend(BenchSpec(model=str(path), backend="keras", threads=t, kind="keras", **kcommon)
                         for t in threads)
            continue
        if common.get("device") and not backends:
            chosen: list[str | None] = [None]
        else:
            chosen = list(backends_for_model(path, backends, available))
        if not chosen:
            skipped.append(f"{path.name}: no requested backend can read it here "
                           f"(able: {', '.join(backends_for(path))}; installed: {', '.join(available)})")
        for b in chosen:
            specs.extend(BenchSpec(model=str(path), backend=b, threads=t, **common) for t in threads)
    return specs, skipped


def preflight(specs: list[BenchSpec]) -> None:
    """Refuse the whole benchmark (exit 2) when an artifact fails its manifest sha256 or is not a valid
    model: a number measured on a tampered or damaged file must never be reported.

    Each artifact is opened once here with its format's preferred backend (all load-time checks);
    only InvalidModel/IntegrityError refuse: a missing package or delegate stays a failed row.
    """
    from edgeproof.errors import EdgeproofError, IntegrityError, InvalidModel
    from edgeproof.runtime import load
    from edgeproof.runtime.model_check import preflight as check

    for path, verify, trust in dict.fromkeys((s.model, s.verify, s.trust_model) for s in specs
                                             if s.kind == "artifact"):
        check(path, verify, trust)  # a refused op (a model is a program) refuses the whole benchmark too
        try:
            load(path, verify=False, trust_model=trust).close()  # the sha256 was just checked
        except (IntegrityError, InvalidModel):
            raise
        except EdgeproofError:
            pass


def run_specs(specs: list[BenchSpec], isolate: bool = True, timeout_s: float = 600.0,
              on_done=None) -> list[dict]:
    """Run every spec (each in a fresh subprocess when ``isolate``); failures become records."""
    records: list[dict] = []
    for spec in specs:
        if isolate:
            got = run_in_subprocess(spec, timeout_s)
        else:
            got = run_spec_safe(spec)
            for r in got:
                r["rss_isolated"] = False
        records.extend(got)
        if on_done is not None:
            on_done(spec, got)
    return records


def run_in_subprocess(spec: BenchSpec, timeout_s: float = 600.0) -> list[dict]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    cmd = [sys.executable, "-m", "edgeproof.bench.runner"]
    try:
        proc = subprocess.run(cmd, input=json.dumps(asdict(spec)), capture_output=True, text=True,
                              timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        return [_failed(spec, f"timed out after {timeout_s:.0f} s (lower --runs or raise the timeout)")]
    # the child's warnings (device fallback, a format the profile does not prefer) would die with
    # its captured stderr: hand them to the parent, which prints them
    warnings = list(dict.fromkeys(ln.strip() for ln in proc.stderr.splitlines() if ln.startswith("warning:")))
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            records = json.loads(line[len(RESULT_MARK):])
            for r in records:
                r["warnings"] = warnings
            return records
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return [_failed(spec, f"benchmark process exited with code {proc.returncode}: {tail}")]


def _failed(spec: BenchSpec, error: str) -> dict:
    rec = _base_record(spec)
    rec.update(status="failed", error=error)
    return rec


def _base_record(spec: BenchSpec) -> dict:
    p = Path(spec.model)
    return {
        "model": str(p), "format": spec.format_name(), "backend": spec.backend, "threads": spec.threads,
        "batch": spec.batch, "kind": spec.kind, "device": spec.device, "status": "ok", "error": None,
        "size_bytes": p.stat().st_size if p.is_file() else None,
    }


# ---------------------------------------------------------------- measuring (child side)

def peak_rss_mib() -> float | None:
    """This process's peak resident set size so far (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    except (ImportError, OSError):
        return None


def bench_input(height: int, width: int, batch: int, seed: int, preprocess=None, channels: int | None = None
                ) -> np.ndarray:
    """Fixed-seed random pixels in [0, 255], normalized by the model's contract: NHWC float32 with the
    contract's channels (3 without one)."""
    rng = np.random.default_rng(seed)
    channels = channels or (preprocess.channels if preprocess is not None else 3)
    x = rng.integers(0, 256, size=(batch, height, width, channels)).astype(np.float32)
    if preprocess is not None:
        x = x * np.float32(preprocess.scale)
        x = (x - np.asarray(preprocess.mean, np.float32)) / np.asarray(preprocess.std, np.float32)
    return np.ascontiguousarray(x, dtype=np.float32)


def run_spec_safe(spec: BenchSpec) -> list[dict]:
    """run_spec, with any failure turned into a 'failed' record (one clear line)."""
    try:
        return run_spec(spec)
    except EdgeproofError as exc:
        return [_failed(spec, str(exc))]
    except Exception as exc:  # noqa: BLE001 - a backend's own error: record it, keep the suite going
        return [_failed(spec, f"{type(exc).__name__}: {exc}")]


def run_spec(spec: BenchSpec) -> list[dict]:
    if spec.kind == "keras":
        return _run_keras(spec)
    return [_run_artifact(spec)]


def _run_artifact(spec: BenchSpec) -> dict:
    from edgeproof.bench.baselines import bare_baseline
    from edgeproof.runtime import load

    rec = _base_record(spec)
    rec["rss_start_mib"] = peak_rss_mib()
    if spec.backend:
        t0 = time.perf_counter()
        importlib.import_module(BACKENDS[spec.backend].package)
        rec["import_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = load(spec.load_spec())
    rec["load_s"] = time.perf_counter() - t0
    try:
        rec["backend"] = model.backend_name
        rec["format"] = model.format or rec["format"]
        pp = model.preprocess
        x = bench_input(pp.height, pp.width, spec.batch, spec.seed, pp)
        t0 = time.perf_counter()
        model.predict(x)
        rec["first_inference_ms"] = (time.perf_counter() - t0) * 1e3
        for _ in range(spec.warmup):
            model.predict(x)
        rec["peak_rss_mib"] = peak_rss_mib()
        rec["placement"] = model.placement
        rec["input_shape"] = list(x.shape)

        bare = (bare_baseline(model.backend_name, spec.model, spec.threads, x, model)
                if spec.baseline else None)
        fns = {"edgeproof": lambda: model.predict(x)}
        if bare is not None:
            fns["bare"] = bare.call
            if bare.call_user is not None:
                fns["user"] = bare.call_user
            for _ in range(spec.warmup):
                for name, fn in fns.items():
                    if name != "edgeproof":
                        fn()
        times = stats.time_interleaved(fns, spec.runs, spec.min_seconds, block=TIMING_BLOCK if len(fns) > 1 else 1)
        lat = stats.summarize(times["edgeproof"], spec.batch)
        rec.update(lat.to_dict())
        rec["samples_ms"] = [round(t * 1e3, 4) for t in times["edgeproof"]]
        inside = model.backend.time_inside(model.to_native(x), spec.warmup, spec.runs)
        if inside is not None:  # the runtime timed itself (in a browser page): those are the latency figures
            rec["driver_p50_ms"] = lat.p50_ms  # edgeproof's call from Python, the driver's round trip included
            rec.update(stats.summarize([t / 1e3 for t in inside["samples_ms"]], spec.batch).to_dict())
            rec["samples_ms"] = [round(t, 4) for t in inside["samples_ms"]]
            rec["timed_in"] = inside["timed_in"]
            rec["versions"] = {k: v for k, v in inside.items() if k not in ("samples_ms", "timed_in")}
            rec["placement"] = {**rec["placement"], "where": f"{rec['placement']['where']}; timed in the page"}
        if bare is not None:
            bl = stats.summarize(times["bare"], spec.batch)
            ov = stats.overhead(times["edgeproof"], times["bare"], seed=spec.seed)
            rec["baseline"] = {"name": bare.name, "load_s": bare.load_s, **bl.to_dict(), **bare.notes}
            rec["overhead_ratio"] = ov["ratio"]
            rec["overhead"] = ov
            same = ov
            if "user" in times:  # vs a loop that also (de)quantizes per call, as edgeproof must
                uo = same = stats.overhead(times["edgeproof"], times["user"], seed=spec.seed)
                rec["baseline"]["with_quantize_p50_ms"] = stats.summarize(times["user"], spec.batch).p50_ms
                rec["overhead_vs_quantizing_loop"] = uo["ratio"]
            # The goal's comparison: a bare loop doing the same work (for int8 I/O, its own (de)quantizing).
            rec["overhead_same_work"] = {"ratio": same["ratio"], "added_us_p50": same["added_us_p50"],
                                         "ci95": same["ci95"]}
            bare.close()
        else:
            rec["baseline"], rec["overhead_ratio"] = None, None
        if spec.source:
            from edgeproof.bench.endtoend import run_end_to_end

            rec["end_to_end"] = run_end_to_end(model, spec.source, spec.runs, spec.batch, lat.throughput_ips)
        rec["peak_rss_total_mib"] = peak_rss_mib()
    finally:
        model.close()
    return rec


def _run_keras(spec: BenchSpec) -> list[dict]:
    from edgeproof.bench.baselines import keras_baselines

    rss_start = peak_rss_mib()
    # The contract: Keras input is raw RGB pixels in [0, 255] (normalization is inside the graph).
    fns, facts, x = keras_baselines(spec.model, spec.threads,
                                    lambda h, w, c: bench_input(h, w, spec.batch, spec.seed, None, c),
                                    spec.trust_model)
    first = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        first[name] = (time.perf_counter() - t0) * 1e3
        for _ in range(spec.warmup):
            fn()
    peak = peak_rss_mib()
    times = stats.time_interleaved(fns, spec.runs, spec.min_seconds)
    out = []
    for name, samples in times.items():
        rec = _base_record(spec)
        rec.update(backend=name, rss_start_mib=rss_start, import_s=facts["import_s"], load_s=facts["load_s"],
                   first_inference_ms=first[name], peak_rss_mib=peak, placement=None,
                   input_shape=list(x.shape), baseline=None, overhead_ratio=None,
                   versions={"tensorflow": facts["tensorflow"], "keras": facts["keras"]})
        rec.update(stats.summarize(samples, spec.batch).to_dict())
        rec["samples_ms"] = [round(t * 1e3, 4) for t in samples]
        rec["peak_rss_total_mib"] = peak_rss_mib()
        out.append(rec)
    return out


def _child_main() -> int:
    # The library's warnings (device fallback, a format the profile does not prefer) as 'warning: ...'
    # lines on stderr, which run_in_subprocess hands to the parent.
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    logging.getLogger("edgeproof").addHandler(handler)
    spec = BenchSpec(**json.loads(sys.stdin.read()))
    records = run_spec_safe(spec)
    for r in records:
        r.setdefault("rss_isolated", True)
    sys.stdout.write(RESULT_MARK + json.dumps(records, default=str) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(_child_main())
