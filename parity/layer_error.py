"""Per-layer quantization error, shared by the TFLite and ONNX triage.

Two numbers per quantized tensor:
- rmse/scale: RMS quantization error in units of the tensor's scale. Pure rounding gives
  1/sqrt(12) ≈ 0.289; above 0.7 the layer is suspect (LiteRT's QuantizationDebugger guidance).
- channel SNR (dB): the median over channels of 10·log10(Σf² / Σ(f − dq)²). This catches what
  rmse/scale cannot: a tensor with a few huge-outlier channels gets a huge per-tensor scale,
  the informative channels round to zero (error < scale/2, so rmse/scale looks *healthy*), and
  their SNR falls to ~0 dB. Channel axis: NHWC (TFLite) vs NCHW (tf2onnx) is ambiguous, so the
  worse of the last axis and axis 1 is taken; mixing channels can only raise the median.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

import numpy as np

HEALTHY_RMSE_SCALE = 0.289
SUSPECT_RMSE_SCALE = 0.7
SUSPECT_CHANNEL_SNR_DB = 10.0
SNR_CAP_DB = 100.0


@dataclass
class LayerError:
    tensor: str  # tensor/node name as the converter knows it (what a denylist takes)
    op: str
    layer: str | None  # the Keras layer it came from, when the name says so
    rmse_scale: float | None
    channel_snr_db: float | None
    scale: float | None
    suspect: bool = False
    reason: str = ""
    exclude: list[str] = field(default_factory=list)  # names to keep in float to fix it

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        return f"{self.layer} ({self.op})" if self.layer else f"{self.tensor} ({self.op})"


def _axis_median_snr(f: np.ndarray, dq: np.ndarray, axis: int) -> float | None:
    with np.errstate(invalid="ignore", over="ignore"):
        f = np.nan_to_num(np.moveaxis(f, axis, -1).reshape(-1, f.shape[axis]).astype(np.float64))
        dq = np.nan_to_num(np.moveaxis(dq, axis, -1).reshape(-1, dq.shape[axis]).astype(np.float64))
    energy = np.sum(f * f, axis=0)
    err = np.sum((f - dq) ** 2, axis=0)
    live = energy > 1e-12 * max(float(energy.max()), 1e-30)  # dead (all-zero) channels carry no signal
    if not np.any(live):
        return None
    with np.errstate(divide="ignore"):
        snr = np.where(err[live] > 0, 10.0 * np.log10(energy[live] / np.maximum(err[live], 1e-300)), SNR_CAP_DB)
    return float(np.median(np.minimum(snr, SNR_CAP_DB)))


def channel_snr_db(f: np.ndarray, dq: np.ndarray) -> float | None:
    """Median per-channel SNR of dq against f, the worse of the two plausible channel axes."""
    f, dq = np.asarray(f), np.asarray(dq)
    if f.shape != dq.shape or f.size == 0:
        return None
    if f.ndim == 0:
        return None
    axes = [f.ndim - 1] + ([1] if f.ndim >= 3 else [])
    vals = [v for v in (_axis_median_snr(f, dq, a) for a in axes) if v is not None]
    return min(vals) if vals else None


def rmse_scale(f: np.ndarray, dq: np.ndarray, scale: float | None) -> float | None:
    if not scale:
        return None
    d = np.asarray(f, np.float64) - np.asarray(dq, np.float64)
    return float(np.sqrt(np.mean(d * d)) / scale)


def judge(le: LayerError) -> LayerError:
    reasons = []
    if le.rmse_scale is not None and le.rmse_scale > SUSPECT_RMSE_SCALE:
        reasons.append(f"rmse/scale {le.rmse_scale:.3f} > {SUSPECT_RMSE_SCALE} (healthy ≈ {HEALTHY_RMSE_SCALE})")
    if le.channel_snr_db is not None and le.channel_snr_db < SUSPECT_CHANNEL_SNR_DB:
        reasons.append(f"median channel SNR {le.channel_snr_db:.1f} dB < {SUSPECT_CHANNEL_SNR_DB:g} dB "
                       "(outlier channels: the per-tensor scale leaves the others no resolution)")
    le.suspect = bool(reasons)
    le.reason = "; ".join(reasons)
    return le


def rank(layers: list[LayerError]) -> list[LayerError]:
    """Worst first: suspects, then lowest channel SNR, then highest rmse/scale.

    ``layers`` come in graph order. Collapsed channels (SNR under the limit) that tie at the same
    SNR put the upstream layer first: a layer reading a collapsed tensor collapses too (and its
    rmse/scale, not its cause, is then the bigger one), so the first one is where the error starts.
    """
    def key(item: tuple[int, LayerError]):
        pos, le = item
        snr = le.channel_snr_db if le.channel_snr_db is not None else SNR_CAP_DB
        collapsed = le.suspect and snr < SUSPECT_CHANNEL_SNR_DB
        return (not le.suspect, round(snr, 1), pos if collapsed else 0, -(le.rmse_scale or 0.0))
    return [le for _, le in sorted(enumerate(layers), key=key)]


def keras_layer_of(name: str, layer_names: list[str]) -> str | None:
    """'functional_1/outlier_dense_1/MatMul;...' -> 'outlier_dense'.

    A fused TFLite name lists several ops ('a/BiasAdd;b/MatMul;b/BiasAdd'): the layer named by most
    of its parts wins (ties: the longer name, which is the more specific match).
    """
    exact = set(layer_names)  # ONNX node names hold '/': the whole name, not a part of it, is the layer
    hit = next((c for c in name.split(";") if c in exact), None)
    if hit is not None:
        return hit
    votes: dict[str, int] = {}
    for chunk in name.split(";"):
        parts = [p for p in re.split(r"[/:]", chunk) if p]
        hit = None
        for ln in layer_names:
            pat = re.compile(rf"^{re.escape(ln)}(_\d+)?$")
            if any(pat.match(p) for p in parts) and (hit is None or len(ln) > len(hit)):
                hit = ln
        if hit is not None:
            votes[hit] = votes.get(hit, 0) + 1
    if not votes:
        return None
    return max(votes, key=lambda ln: (votes[ln], len(ln)))
