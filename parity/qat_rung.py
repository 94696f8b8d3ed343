"""convert's qat rung (convert.qat) inside the held-out escalation (parity.escalate).

Two places use it:
- the last rung of the ladder, for any int8 format whose post-training variants all miss (fix_ladder.qat_variant);
- a rival to a *passing* artifact whose recipe keeps the first convolution integer (edgetpu, tflite-int16x8,
  tflite-int8 with uint8 I/O): there 40/40 held-out calibration images is weak evidence. On shapes seeds 2 and
  4 (benchmarks/fidelity_seeds.py) the edgetpu file agreed on 40/40 held-out images, 29 dB, and on 186-188 of
  192 test images (the gate needs 190). The QAT variant is built too and must pass the same held-out gate
  through every listed backend; it replaces the artifact (same format, same recipe, recipe and QAT record in
  manifest.json) only when it then ranks higher by the search's own rule (SNR within one image of the best
  agreement) on a larger set
  that neither file was calibrated or fine-tuned on: the run's validation split (up to COMPARE_MAX images; the
  parity test split is never looked at), or, without one, the held-out images. 40 held-out images did not
  rank them: on seed 2 PTQ scored 40.2 dB there and QAT 36.7 dB, while on the 192 test images PTQ agreed on
  188 (fails) and QAT on 191 (passes); on the 192 validation images QAT ranked higher on seeds 2 and 4.

Only with labeled images (the run's train split, or --calib-data with class subfolders) and the qat extra.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from edgeproof.formats import Format

log = logging.getLogger(__name__)
COMPARE_MAX = 512


class QatRung:
    """The one QAT fine-tune of an escalation, made on first use (None when it cannot run: `why` says so)."""

    def __init__(self, source, model, held, seed: int) -> None:
        self.source, self.model, self.held, self.seed = source, model, held, seed
        self.why: str | None = None
        self._tuner = None
        self._done = False

    def tuner(self):
        if self._done:
            return self._tuner
        self._done = True
        from edgeproof.convert import qat
        from edgeproof.parity.triage import is_onnx_source

        self.why = "an ONNX source has no Keras graph to fine-tune" if is_onnx_source(self.model) else qat.missing()
        if self.why is None:
            data = qat.labeled_images(self.source, self.seed, exclude=self.held)
            if data is None:
                self.why = "no labeled images (a run's train split, or --calib-data with class subfolders)"
            else:
                self._tuner = qat.Tuner(self.model, data, getattr(self.source, "head", "probabilities"), self.seed)
        if self.why:
            log.info("qat rung not tried: %s", self.why)
        return self._tuner

    def compare_set(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(images, the float model's scores) of the run's validation split, or None without one."""
        if not hasattr(self, "_compare"):
            self._compare = _validation(self.source, self.model)
        return self._compare


def _validation(source, model) -> tuple[np.ndarray, np.ndarray] | None:
    from edgeproof.convert.int8_recipes import keras_reference
    from edgeproof.convert.quant_search import MIN_FOR_SEARCH
    from edgeproof.errors import UsageError
    from edgeproof.runtime.preprocess import ImageReadError, load_image

    try:
        items = source.split("val")
    except UsageError:
        return None
    images = []
    for path, _ in items[:COMPARE_MAX]:
        try:
            images.append(load_image(path, source.preprocess))
        except ImageReadError:
            continue
    if len(images) < MIN_FOR_SEARCH:
        return None
    x = np.ascontiguousarray(np.stack(images).astype(np.float32))
    return x, keras_reference(model, getattr(source, "head", "probabilities"))(x)


def keeps_first_conv_integer(fmt: Format, path: Path) -> bool:
    """A calibrated TFLite format whose recipe (at this file's I/O type) quantizes the first convolution."""
    if fmt.family != "tflite" or not fmt.calibrated:
        return False
    from edgeproof.parity.triage import _io_type

    return not fmt.recipe.first_conv_float(_io_type(path))


def rival(fmt: Format, out_dir: Path, path: Path, row, passed, fit, held, ref, prefer: str, tmp: Path, rung: QatRung):
    """`passed` (a HeldOut) or, when the qat variant passes and ranks higher, that variant promoted in place."""
    from edgeproof.parity.escalate import HeldOut, _agree, _run, _snr
    from edgeproof.parity.fix_ladder import qat_variant
    from edgeproof.parity.promote import promote
    from edgeproof.parity.triage import _io_type

    tuner = rung.tuner()
    if tuner is None:
        return passed
    fixes = _run(fmt, path, iter([qat_variant(fmt, tuner, _io_type(path))]), fit, held, ref, row, prefer, tmp)
    got = fixes[-1]
    tried = f"{_agree(got)}, {_snr(got)} dB" if got.status in ("pass", "fail") else got.reason
    ranked, ptq, new = "", None, None
    if got.status == "pass" and not getattr(got, "rejected", None):
        ptq, new, ranked = _rank(fmt, path, got, row, rung)
    if got.status != "pass" or getattr(got, "rejected", None) or not _ranks_higher(new, ptq):
        why = f"turned down: {got.rejected}" if getattr(got, "rejected", None) else "kept the post-training file"
        passed.line += f"; its first convolution is integer, so the qat rung was tried too ({tried}{ranked}): {why}"
        passed.fixes = fixes
        return passed
    promote(got.path, fmt.name, out_dir, got.variant, got.recipe, by="edgeproof convert (held-out ladder, qat rung)")
    return HeldOut(fmt.name, "pass", f"{passed.line}; its first convolution is integer, so the qat rung was tried "
                   f"too and ranks higher ({tried}{ranked}): taken in place",
                   {**passed.figures, "improved_by": got.variant}, fixes)


def _rank(fmt: Format, path: Path, got, row, rung: QatRung) -> tuple:
    """(post-training row, qat row, '; on N validation images: ...') judged on the comparison set (validation
    split), or the held-out rows themselves when there is none."""
    from edgeproof.parity.escalate import _agree, _snr, judge_held_out

    cmp = rung.compare_set()
    if cmp is None:
        return row, got, ""
    x, ref = cmp
    ptq, new = judge_held_out(path, fmt, x, ref), judge_held_out(got.path, fmt, x, ref)
    return ptq, new, (f"; on {len(x)} validation images qat {_agree(new)}, {_snr(new)} dB, post-training "
                      f"{_agree(ptq)}, {_snr(ptq)} dB")


def _ranks_higher(new, ptq) -> bool:
    """The search's rule (convert.quant_search): within one image of the best agreement the SNR decides, and a tie
    keeps the post-training file. Seed 0 of shapes, tflite-int16x8, 192 validation images: qat 192/192 33.7 dB,
    post-training 191/192 44.5 dB: agreement first would have taken the file 11 dB further from Keras."""
    a, b = _figures(new), _figures(ptq)
    if a is None:
        return False
    if b is None:
        return True
    top = max(a[0], b[0])
    return a[0] >= top - 1 and (b[0] < top - 1 or a[1] > b[1])


def _figures(row) -> tuple[int, float] | None:
    c = getattr(row, "comparison", None)
    return None if c is None else (c.task.top1_agree_count, float(c.tensor.snr_db))
