"""convert's qat rung (convert.qat) inside the held-out escalation (parity.escalate).

Two places use it:
- the last rung of the ladder, for any int8 format whose post-training variants all miss (fix_ladder.qat_variant);
- a rival to a *passing* artifact whose recipe keeps the first convolution integer (edgetpu, tflite-int16x8,
  tflite-int8 with uint8 I/O): there 40/40 held-out calibration images is weak evidence. On shapes seeds 2 and
  4 (benchmarks/fidelity_seeds.py) the edgetpu file agreed on 40/40 held-out images, 29 dB, and on 186-188 of
  192 test images (the gate needs 190). The QAT variant is built too, judged on the same held-out images
  through every listed backend, and replaces the artifact (same format, same recipe, recipe and QAT record
  in manifest.json) only when it passes and ranks higher by the search's own key: held-out agreement, then SNR.

Only with labeled images (the run's train split, or --calib-data with class subfolders) and the qat extra.
"""

from __future__ import annotations

import logging
from pathlib import Path

from edgeproof.formats import Format

log = logging.getLogger(__name__)


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
    if got.status != "pass" or getattr(got, "rejected", None) or _key(got) <= _key(row):
        why = f"turned down: {got.rejected}" if getattr(got, "rejected", None) else "kept the post-training file"
        passed.line += f"; its first convolution is integer, so the qat rung was tried too ({tried}): {why}"
        passed.fixes = fixes
        return passed
    promote(got.path, fmt.name, out_dir, got.variant, got.recipe, by="edgeproof convert (held-out ladder, qat rung)")
    return HeldOut(fmt.name, "pass", f"{passed.line}; its first convolution is integer, so the qat rung was tried "
                   f"too and ranks higher ({tried}): taken in place", {**passed.figures, "improved_by": got.variant},
                   fixes)


def _key(row) -> tuple:
    c = row.comparison
    return (c.task.top1_agree_count, float(c.tensor.snr_db))
