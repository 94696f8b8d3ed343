"""convert's own gate: every calibrated artifact judged on its held-out calibration images, the fix ladder when
it misses, and an artifact marked `failed` when nothing passes.

After `edgeproof convert` writes the int8 artifacts (convert.pipeline, whose search picked each recipe on the
held-out fifth of the calibration batch, convert.quant_search.split), each one is judged by the parity gate
itself (parity.gate: agreement with near-ties, SNR floor; the images have no labels, so no accuracy test) on
those held-out images, through every installed backend listed for its format. One that misses climbs the
same ladder as `parity --fix` (parity.fix_ladder: calibration recipes, per-channel/per-tensor, protected
tensors in int16 or float, int16 activations, each built on the fit part and judged on the held-out part), with
--prefer deciding about variants more than 2x slower (parity.promote.acceptor). A passing variant of the same
format replaces the artifact in place (parity.promote.promote, recipe in manifest.json). A passing variant of
another format (int16x8 for tflite-int8) is written under ITS name when that format is not already in place,
and the int8 artifact stays failed: convert never puts int16 tensors in an int8-named file. When nothing
passes the artifact is kept, its manifest entry marked `failed` with one line: which format, by how much, what
to try. The parity test images are never looked at here. The ladder's last rung is a short QAT fine-tune
(convert.qat, parity.qat_rung) where labeled images exist; for a recipe that keeps the first convolution integer
it is also tried against a passing artifact and taken when it ranks higher on the held-out images.

It lives in parity (it judges with the gate) and runs after convert_run: `edgeproof convert` and `edgeproof
demo` call `escalate`; a library user calls it the same way.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeproof.formats import FORMATS, Format, artifact_filename, backend_installed
from edgeproof.parity.gate import Failure

log = logging.getLogger(__name__)


@dataclass
class HeldOut:
    """The held-out verdict of one artifact: pass | fixed | failed | not judged, and what to tell the user."""

    format: str
    status: str
    line: str
    figures: dict = field(default_factory=dict)
    fixes: list = field(default_factory=list)  # runner.Row per variant tried

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_dict(self) -> dict:
        return {"status": self.status, "line": self.line, **self.figures,
                "fixes": [{"variant": getattr(r, "variant", ""), "status": r.status, "format": getattr(r, "real_format", None),
                           "agreement": _agree(r), "snr_db": _snr(r), "latency_ratio": getattr(r, "latency_ratio", None),
                           "rejected": getattr(r, "rejected", None), "reason": r.reason or None} for r in self.fixes]}


def _agree(r) -> str | None:
    c = getattr(r, "comparison", None)
    return None if c is None else f"{c.task.top1_agree_count}/{c.task.n}"


def _snr(r) -> float | None:
    c = getattr(r, "comparison", None)
    return None if c is None else round(float(min(c.tensor.snr_db, 999.0)), 2)


def judge_held_out(path: Path, fmt: Format, held: np.ndarray, ref: np.ndarray):
    """The gate on the held-out images, backend by backend (installed and listed); the first failing row, else
    the first row."""
    from edgeproof.parity import runner
    from edgeproof.runtime import load

    first = None
    for backend in (b for b in fmt.backends if backend_installed(b)):
        try:
            with load(path, backend=backend, verify=False) as m:
                probs = m.predict(held)
                latency = runner.latency_p50_ms(m, held)
        except Exception as exc:  # noqa: BLE001 - a listed backend that cannot run it fails, with why
            return runner.error_row(path, fmt, backend, runner.failure_of(exc), True)
        row = runner.judge(path, fmt, backend, probs, latency, ref, None, fmt.tolerance, True)
        if row.status != "pass":
            return row
        first = first or row
    if first is None:
        raise RuntimeError(f"no backend listed for {fmt.name} is installed")
    return first


def short_by(failures: list[Failure], n: int) -> str:
    """'agreement 35/40 (needs 40/40), SNR 11.8 dB (floor 12 dB)': how far from the gate."""
    from edgeproof.parity.metrics import min_count_for

    out = []
    for f in failures:
        if f.metric == "top1_agreement":
            out.append(f"agreement {round(float(f.value) * n)}/{n} counting near-ties (needs "
                       f"{min_count_for(float(f.limit), n)}/{n})")
        elif f.metric == "snr_db":
            out.append(f"SNR {float(f.value):.1f} dB (floor {float(f.limit):g} dB)")
        else:
            out.append(f.message)
    return ", ".join(out) or "no figure"


def escalate(source, out_dir: Path, formats: list[Format], calib_count: int, seed: int = 0,
             auto_fix: bool = True, prefer: str = "balanced") -> list[HeldOut]:
    """Judge each calibrated artifact in `out_dir` on the held-out calibration images; climb the ladder when it
    misses (auto_fix); mark what still misses `failed` in manifest.json. Returns one HeldOut per format judged."""
    from edgeproof.convert import quant_search
    from edgeproof.convert.calibration import calibration_batch
    from edgeproof.convert.int8_recipes import keras_reference
    from edgeproof.convert.manifest import load_manifest

    out_dir = Path(out_dir)
    manifest = load_manifest(out_dir)
    todo = [f for f in formats if f.calibrated and (e := manifest.get(f.name)) is not None and e.status == "ok"
            and e.path is not None and e.path.is_file()]
    if not todo:
        return []
    calib, _, _ = calibration_batch(source, calib_count, seed=seed)
    if len(calib) < quant_search.MIN_FOR_SEARCH:
        why = (f"not judged: {len(calib)} calibration images leave none held out (needs {quant_search.MIN_FOR_SEARCH});"
               " parity judges it on the test images")
        return [HeldOut(f.name, "not judged", why) for f in todo]
    fit, held = quant_search.split(calib)
    fit = _more_fit(source, calib, fit, calib_count, seed)
    model = source.keras_model("edgeproof convert")
    ref = keras_reference(model, source.head)(held)
    from edgeproof.parity.qat_rung import QatRung

    qat = QatRung(source, model, held, seed) if auto_fix else None
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeproof-escalate-") as tmp:
        for fmt in todo:
            results.append(_one(fmt, out_dir, source, model, fit, held, ref, auto_fix, prefer, Path(tmp), qat))
    _record(out_dir, results)
    return results


def _more_fit(source, calib: np.ndarray, fit: np.ndarray, calib_count: int, seed: int) -> np.ndarray:
    """The ladder's calibration: up to FIX_CALIB_COUNT images of the same stratified order, less the held-out ones
    (the batch is a prefix of that order, so they are known); the search's own fit part when there are no more."""
    from edgeproof.convert.calibration import calibration_batch
    from edgeproof.parity.fix_ladder import FIX_CALIB_COUNT

    if calib_count >= FIX_CALIB_COUNT:
        return fit
    more, _, _ = calibration_batch(source, FIX_CALIB_COUNT, seed=seed)
    if len(more) <= len(calib) or not np.array_equal(more[: len(calib)], calib):
        return fit
    from edgeproof.convert.quant_search import HOLDOUT_EVERY

    held = np.zeros(len(more), bool)
    held[: len(calib)] = np.arange(len(calib)) % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    return more[~held]


def _one(fmt: Format, out_dir: Path, source, model, fit, held, ref, auto_fix: bool, prefer: str, tmp: Path,
         qat=None) -> HeldOut:
    from edgeproof.parity.promote import choose

    path = out_dir / artifact_filename(fmt)
    n = len(held)
    row = judge_held_out(path, fmt, held, ref)
    figures = {"held_out_images": n, "agreement": _agree(row), "snr_db": _snr(row), "backend": row.backend}
    if row.status == "pass":
        passed = HeldOut(fmt.name, "pass", f"{fmt.name}: passes the gate on {n} held-out calibration images "
                         f"({figures['agreement']}, {figures['snr_db']} dB on {row.backend})", figures)
        from edgeproof.parity.qat_rung import keeps_first_conv_integer, rival

        return rival(fmt, out_dir, path, row, passed, fit, held, ref, prefer, tmp, qat) \
            if qat is not None and keeps_first_conv_integer(fmt, path) else passed
    missed = f"{fmt.name}: misses the gate on {n} held-out calibration images by {short_by(row.failures, n)}"
    if not auto_fix:
        return HeldOut(fmt.name, "failed", f"{missed}; the fix ladder is off (--no-auto-fix); try: drop --no-auto-fix, "
                       f"{_hint(fmt)}", figures)
    fixes = _ladder(fmt, path, source, model, fit, held, ref, row, prefer, tmp, qat)
    taken, note = choose(fixes, prefer)
    tried = f"{len(fixes)} variant(s) of the fix ladder tried"
    if taken is None:
        rejected = [f for f in fixes if getattr(f, "rejected", None)]
        also = f" ({len(rejected)} passed but turned down: {rejected[0].rejected})" if rejected else ""
        return HeldOut(fmt.name, "failed", f"{missed}; {tried}, none passes{also}; try: {_hint(fmt)}", figures, fixes)
    return _take(fmt, out_dir, taken, note, missed, tried, figures, fixes)


def _take(fmt: Format, out_dir: Path, taken, note, missed: str, tried: str, figures: dict, fixes: list) -> HeldOut:
    from edgeproof.convert.manifest import load_manifest
    from edgeproof.parity.promote import promote

    real = getattr(taken, "real_format", fmt.name)
    what = f"'{taken.variant}' ({_agree(taken)}, {_snr(taken)} dB" + (
        f", {taken.latency_ratio:.1f}x the p50 of the file it replaces" if getattr(taken, "latency_ratio", None) else "") + ")"
    figures = {**figures, "fixed_by": taken.variant}
    if real == fmt.name:
        promote(taken.path, fmt.name, out_dir, taken.variant, taken.recipe, by="edgeproof convert (held-out ladder)")
        return HeldOut(fmt.name, "fixed", f"{missed}; fixed by {what}, in place" + (f"; {note}" if note else ""),
                       figures, fixes)
    if not real:  # no format in the table: kept nowhere, named in the line
        return HeldOut(fmt.name, "failed", f"{missed}; only {what} passes, with int16 activations no format describes;"
                       f" try: {_hint(fmt)}", figures, fixes)
    entry = load_manifest(out_dir).get(real)
    if entry is None or entry.status != "ok":
        promote(taken.path, real, out_dir, taken.variant, taken.recipe, by="edgeproof convert (held-out ladder)")
        where = f"written as {artifact_filename(FORMATS[real])}"
    else:
        where = f"{artifact_filename(FORMATS[real])} is already in place"
    return HeldOut(fmt.name, "failed", f"{missed}; {tried}: only {what} passes, a {real} file ({where}); the {fmt.name} "
                   f"file stays as it is, marked failed; try: use {real}, or {_hint(fmt)}", figures, fixes)


def _hint(fmt: Format) -> str:
    int16 = "tflite-int16x8 (int16 activations, slower), " if fmt.family == "tflite" and "INT16" not in (
        getattr(fmt.recipe, "ops", "") or "") else ""
    return (f"more or more varied calibration images (--calib-count, --calib-data), {int16}or --allow-failing to keep "
            "the artifact and exit 0")


def _ladder(fmt: Format, path: Path, source, model, fit, held, ref, row, prefer: str, tmp: Path, qat=None) -> list:
    from edgeproof.parity import fix_ladder

    tuner = qat.tuner() if qat is not None else None
    if fmt.family == "tflite":
        from edgeproof.parity.triage import _io_type, tf_model

        # an ONNX source re-exports from onnx2tf's SavedModel (it has no Keras graph to convert)
        variants = fix_ladder.tflite_variants(fmt, tf_model(model, fit, tmp), fit, _io_type(path), [], tmp,
                                              qat=tuner)
    else:
        fp32, probe = path.parent / artifact_filename(FORMATS["onnx-fp32"]), path
        if not fp32.is_file():
            import onnx

            from edgeproof.convert.onnx_export import to_onnx

            fp32 = tmp / "fp32.onnx"
            onnx.save(to_onnx(model), str(fp32))
            # a second export in one process renames tensors (Conv__30 -> Conv__67): the protect step matches the
            # int8 file's tensors with the fp32 one's by name, so it reads a quantization of this export instead
            from edgeproof.convert.int8_recipes import onnx_candidate

            probe = onnx_candidate(fp32, fmt.recipe).build(fit, tmp / "same-names")
        variants = fix_ladder.onnx_variants(fmt, probe, fp32, fit, [], qat=tuner)
    if getattr(fmt.recipe, "compiler", None) == "edgetpu":  # only all-int8 variants keep it Edge TPU-ready
        variants = (v for v in variants if v.edgetpu_full)
    return _run(fmt, path, variants, fit, held, ref, row, prefer, tmp)


def _run(fmt: Format, path: Path, variants, fit, held, ref, row, prefer: str, tmp: Path) -> list:
    from edgeproof.parity import fix_ladder
    from edgeproof.parity.promote import acceptor

    def judge(dest: Path, judged_as: Format):
        return judge_held_out(dest, judged_as, held, ref)

    return fix_ladder.run_ladder(row, fmt, variants, fit, None, ref, fmt.tolerance, tmp, judge=judge,
                                 accept=acceptor(prefer, path, row.backend, lambda pp: held),
                                 source="convert's calibration batch, the fit part (held-out images judge)")


def _record(out_dir: Path, results: list[HeldOut]) -> None:
    """The held-out verdict in each manifest entry (options.held_out_gate); a miss marks the entry `failed`
    (the file stays, with its sha256, so the runtime still checks it)."""
    from edgeproof.atomic import Flock
    from edgeproof.convert.manifest import load_manifest

    with Flock(out_dir, folder=True):
        manifest = load_manifest(out_dir)
        for r in results:
            entry = manifest.get(r.format)
            if entry is None:
                continue
            entry.options = {**entry.options, "held_out_gate": r.to_dict()}
            if r.failed:
                entry.status, entry.error = "failed", r.line
            manifest.put(entry)
        manifest.write()
