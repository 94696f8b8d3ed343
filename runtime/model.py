"""`load()` and `Model`: one interface over every backend (TF-free; the backend is imported on load).

Model.predict takes float32 NHWC in model-input space (preprocess.prepare output, stacked) and
returns float32 (N, C) probabilities: it quantizes int8/uint8 inputs with the tensor's own
scale/zero point, transposes for NCHW models, batches, dequantizes and applies softmax to logits.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.contract import (
    BINARY_HEADS,
    ArtifactMeta,
    Preprocess,
    TensorSpec,
    class_scores,
    n_classes,
)
from edgeproof.errors import EdgeproofError, UsageError
from edgeproof.formats import BACKENDS, family_of, format_of
from edgeproof.runtime.backend_choice import choose_backend, device_profile
from edgeproof.runtime.backends.base import Backend, BatchUnsupported
from edgeproof.runtime.model_check import check_io, check_used_shapes, invalid, one_line, ort_reason, preflight
from edgeproof.runtime.model_meta import (  # noqa: F401 - guess_layout, read_labels: public names of this module
    apply_overrides,
    declared_units,
    guess_layout,
    read_labels,
    synthesize_meta,
)
from edgeproof.runtime.output_check import check_outputs, looks_like_probabilities
from edgeproof.runtime.pixels import dequantize_table, pixel_mask
from edgeproof.runtime.spec import OVERRIDE_KEYS, LoadSpec

__all__ = ["OVERRIDE_KEYS", "LoadSpec", "Model", "apply_overrides", "load", "read_labels", "synthesize_meta"]
_U8 = np.dtype(np.uint8)
_QRANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


class Model:
    """A loaded artifact. Use `edgeproof.runtime.load()` to make one."""

    def __init__(self, path: Path, backend: Backend, meta: ArtifactMeta) -> None:
        self.path = path
        self.backend = backend
        self.meta = meta
        self.backend_name = backend.name
        self.input_spec: TensorSpec = backend.input_spec  # the live tensor (truth for quantization)
        self.output_spec: TensorSpec = backend.output_spec
        self.placement = backend.placement
        if backend.degraded:  # what the backend could not read and replaced by a default, said where it runs
            self.placement = {**(backend.placement or {}), "degraded": list(backend.degraded)}
        pp = meta.preprocess
        self._hwc = (pp.height, pp.width, pp.channels)
        self._px1 = (1, *self._hwc)  # one image: predict_pixels' shortest path
        self._nchw = pp.layout == "NCHW"
        i, o = self.input_spec, self.output_spec
        self._in_dtype = np.dtype(i.dtype)
        self._q_in = (np.float32(i.scale), np.float32(i.zero_point or 0), *_QRANGE[i.dtype]) \
            if i.dtype in _QRANGE and i.scale else None
        self._cv2, self._cv_depth = None, None
        self._q_buf: np.ndarray | None = None  # see _quantize
        if self._q_in is not None:
            try:
                import cv2

                self._cv2, self._cv_depth = cv2, {"int8": cv2.CV_8S, "uint8": cv2.CV_8U, "int16": cv2.CV_16S}[i.dtype]
            except ImportError:
                pass
        self._cast_in = self._q_in is None and self._in_dtype != np.float32
        self._q_out = (np.float32(o.scale), np.float32(o.zero_point or 0)) if o.dtype in _QRANGE and o.scale else None
        self._deq = dequantize_table(np.dtype(o.dtype), *self._q_out) if self._q_out is not None else None
        self._pixel_mask: np.uint8 | None = pixel_mask(pp, self._in_dtype, self._quantize) if self._q_in is not None else None
        self._softmax: bool | None = {"logits": True, "probabilities": False,
                                                 "multi-label": False}.get(meta.output_kind)
        self._binary: str | None = meta.output_kind if meta.output_kind in BINARY_HEADS else None
        self._probs_checked = False

    @property
    def labels(self) -> list[str]:
        return self.meta.labels

    @property
    def preprocess(self) -> Preprocess:
        return self.meta.preprocess

    @property
    def format(self) -> str | None:
        return self.meta.format

    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 (N,H,W,C) in model-input space (C: the contract's channels) -> float32 (N, classes) scores."""
        if x.dtype != np.float32:
            x = np.asarray(x, np.float32)
        if x.ndim == 3:
            x = x[None]
        if x.shape[1:] != self._hwc:
            h, w, c = self._hwc
            raise UsageError(f"predict got an array of shape {x.shape}; this model takes float32 "
                             f"(N, {h}, {w}, {c}) NHWC (see edgeproof.runtime.preprocess.prepare)")
        return self._finish(self._dequantize(self._run(self._native(x, reuse=True))), x.shape[0], x)

    @property
    def native_dtype(self) -> str | None:
        """'uint8' or 'int8' when the interpreter takes quantized integers (scale and zero point), else None."""
        return self.input_spec.dtype if self._q_in is not None and self.input_spec.dtype in ("uint8", "int8") else None

    def predict_native(self, q: np.ndarray) -> np.ndarray:
        """The interpreter's own quantized input, (N,H,W,C) of native_dtype, straight to the backend (no float
        round trip: x = (q - zero_point) * scale is what predict would have quantized) -> float32 scores."""
        h, w, c = self._hwc
        if self.native_dtype is None or q.dtype != np.dtype(self.native_dtype) or q.ndim != 4 or q.shape[1:] != self._hwc:
            want = f"{self.native_dtype} (N, {h}, {w}, {c})" if self.native_dtype else "none (its input is not quantized)"
            raise UsageError(f"predict_native got {q.dtype} {q.shape}; this model's native input is {want}")
        native = np.ascontiguousarray(q.transpose(0, 3, 1, 2)) if self._nchw else q
        return self._finish(self._dequantize(self._run(native)), q.shape[0], None)

    @property
    def takes_pixels(self) -> bool:
        """predict_pixels quantizes uint8 pixels by one integer op (runtime.pixels); otherwise it converts them to
        float first, as preprocess.prepare does."""
        return self._pixel_mask is not None

    def predict_pixels(self, px: np.ndarray) -> np.ndarray:
        """uint8 (N,H,W,C) pixels in the contract's size, channels and colour order, not normalized
        (preprocess.pixels) -> the scores predict(preprocess.normalize(px)) gives, bit for bit.

        Where the model's input quantization is an exact integer map of the pixels (runtime.pixels: int8 with
        scale 1 and zero point -128 on 0..255, ...), one integer op writes the quantized input straight into the
        runtime's input tensor: no float step, no NaN check (uint8 has none), no copy."""
        mask = self._pixel_mask
        if mask is None or px.dtype is not _U8 or px.shape != self._px1:  # all but one image on the integer path
            return self._predict_pixels(px)
        try:
            out = self.backend.run_bytes(self._px1, lambda buf: np.bitwise_xor(px, mask, out=buf))
        except EdgeproofError:
            raise
        except Exception as exc:  # noqa: BLE001 - as in _run: the runtime failed inside a model that loaded
            raise self._failed(exc) from None
        deq = self._deq
        return self._finish(deq.take(out) if deq is not None else self._dequantize(out, view=True), 1, px)

    def _predict_pixels(self, px: np.ndarray) -> np.ndarray:
        if px.dtype != np.uint8:
            raise UsageError(f"predict_pixels got a {px.dtype} array; it takes uint8 pixels (preprocess.pixels); "
                             "give float32 model input to predict instead")
        if px.ndim == 3:
            return self.predict_pixels(px[None])
        if self._pixel_mask is None or px.shape[1:] != self._hwc:  # the float path (predict checks the shape)
            from edgeproof.runtime.preprocess import normalize

            return self.predict(normalize(px.astype(np.float32), self.meta.preprocess))
        native = np.bitwise_xor(px, self._pixel_mask).view(self._in_dtype)  # a batch
        return self._finish(self._dequantize(self._run(native)), px.shape[0], px)

    def _failed(self, exc: BaseException) -> EdgeproofError:
        return invalid(self.path, family_of(self.path), f"it loaded but {self.backend_name} failed to run it "
                       f"({one_line(exc)})")

    def _run(self, x: np.ndarray) -> np.ndarray:
        """The backend's raw output for native input x, one row at a time where it takes no batch."""
        n = x.shape[0]
        try:
            if n == 1 or self.backend.batch_ok:
                try:
                    out = self.backend.run(x)
                except BatchUnsupported:
                    out = np.concatenate([self.backend.run(x[i:i + 1]) for i in range(n)])
            else:
                out = np.concatenate([self.backend.run(x[i:i + 1]) for i in range(n)])
        except EdgeproofError:
            raise
        except Exception as exc:  # noqa: BLE001 - the runtime failed inside a model that loaded: a damaged file
            raise self._failed(exc) from None
        return out

    def _dequantize(self, out: np.ndarray, view: bool = False) -> np.ndarray:
        """Raw output -> float32, a new array where `view` (out is the runtime's own buffer, see run_bytes)."""
        if self._deq is not None:  # one table look-up: (q - zero point) * scale
            return self._deq.take(out)
        if self._q_out is not None:
            out = np.subtract(out, self._q_out[1], dtype=np.float32)
            out *= self._q_out[0]
            return out
        return out.astype(np.float32) if view or out.dtype != np.float32 else out

    def _finish(self, out: np.ndarray, n: int, x0: np.ndarray | None) -> np.ndarray:
        """float32 output of n inputs -> (n, classes) scores: reshaped, softmax/sigmoid as the contract says;
        non-finite scores refused (x0: the caller's float input, named when it holds the NaN/inf)."""
        if out.ndim != 2:
            if sum(d > 1 for d in out.shape[1:]) > 1:  # a dynamic shape that turned out to be a feature map
                raise UsageError(f"'{self.path.name}' output has shape {list(out.shape)}: a feature map, not class "
                                 "scores [N, classes]; use a classifier, or export up to its logits")
            out = out.reshape(n, -1)
        if self._softmax is False and not self._probs_checked and np.isfinite(out).all():  # said probabilities: are they?
            self._probs_checked = True
            self._softmax = not looks_like_probabilities(self.path, out)
        if self._binary is None and self._softmax is None and out.shape[1] == 1:  # metadata-less, one unit
            self._binary = "sigmoid" if 0 <= out.min() and out.max() <= 1 else "sigmoid-logit"
        if self._binary is not None:  # one unit p = P(class 1) -> [1 - p, p]
            out = class_scores(out, self._binary)
        else:
            if self._softmax is None:  # metadata-less model: decide once from the first batch
                # Probabilities lie in [0, 1] and sum to ~1 (int8 outputs are coarse: allow 5 %). Softmax is
                # monotonic, so a wrong guess changes scores, never the ranking.
                sums = out.sum(axis=1)
                self._softmax = bool(out.min() < 0 or out.max() > 1 + 1e-3 or np.abs(sums - 1).max() > 0.05)
            if self._softmax:
                out = _softmax(out)
        # From the caller's NaN/inf input, or from damaged weights. The sum is finite unless an element is (or
        # huge finite scores overflow it, which the full check then clears): half the cost of isfinite().all().
        # A quantized output is integers times a finite scale: never NaN/inf, so it is not checked.
        if self._q_out is None and not math.isfinite(out.sum()) and not np.isfinite(out).all():
            if x0 is not None:
                _refuse_non_finite_input(x0)
            raise invalid(self.path, family_of(self.path), f"{self.backend_name} computed non-finite scores "
                          "(NaN/inf) from a finite input, so its weights are damaged")
        return out

    def to_native(self, x: np.ndarray) -> np.ndarray:
        """float32 NHWC (checked by predict) -> what the backend's run() takes: quantized, cast, laid out."""
        return self._native(x, reuse=False)

    def _native(self, x: np.ndarray, reuse: bool) -> np.ndarray:
        """to_native; `reuse`: the quantized input may go into this Model's buffer (predict's own call only)."""
        if self._q_in is not None:
            # Quantizing would silently turn NaN/inf into some in-range integer: refuse it first. x . x (one BLAS
            # pass, 2.3x faster than x.sum()) is finite unless an element is, or huge values overflow it (then
            # the full check clears them).
            flat = x.reshape(-1)
            if not math.isfinite(float(np.dot(flat, flat))):
                _refuse_non_finite_input(x)
            x = self._quantize(x, reuse)
        elif self._cast_in:
            x = x.astype(self._in_dtype)
        if self._nchw:
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x

    def _quantize(self, x: np.ndarray, reuse: bool = False) -> np.ndarray:
        """round(x / scale + zero_point), saturated to the input dtype.

        OpenCV's addWeighted does it in one SIMD pass (4x faster than NumPy's five), into a buffer this Model
        keeps for the next call of the same shape (a fresh array per call cost about 2 us at 64x64: allocation
        and cold cache lines in the interpreter's copy); NumPy otherwise. The buffer is safe to reuse: every
        backend copies or consumes its input before run() returns, and a Model has one caller at a time (to_native, whose result a caller keeps, gets its own array).
        """
        scale, zp, lo, hi = self._q_in
        if self._cv2 is not None:
            x2 = np.ascontiguousarray(x).reshape(-1, x.shape[-2] * x.shape[-1])
            buf = self._q_buf if reuse else None
            if buf is None or buf.shape != x2.shape:
                buf = np.empty(x2.shape, self._in_dtype)
                if reuse:
                    self._q_buf = buf
            self._cv2.addWeighted(x2, float(1.0 / scale), x2, 0.0, float(zp), dst=buf, dtype=self._cv_depth)
            return buf.reshape(x.shape)
        return np.clip(np.rint(x / scale + zp), lo, hi).astype(self._in_dtype)

    def label(self, index: int) -> str:
        return self.meta.labels[index] if 0 <= index < len(self.meta.labels) else f"class_{index}"

    def topk(self, scores: np.ndarray, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per row, the k best (label, score) pairs, best first."""
        scores = np.atleast_2d(scores)
        k = max(1, min(int(k), scores.shape[1]))
        idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[(self.label(int(i)), float(row[i])) for i in ids] for row, ids in zip(scores, idx)]

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, backend={self.backend_name!r}, format={self.format!r})"


def _refuse_non_finite_input(x: np.ndarray) -> None:
    """UsageError naming the NaN/inf values in the caller's input; returns when there are none."""
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.nonzero(bad.reshape(x.shape[0], -1).any(axis=1))[0].tolist()
        raise UsageError(f"predict got {int(bad.sum())} NaN/inf value(s) in its input (batch row(s) "
                         f"{', '.join(map(str, rows[:5]))}{', ...' if len(rows) > 5 else ''}); give finite float32 "
                         "values (see edgeproof.runtime.preprocess.prepare)")


def load(path: str | Path | LoadSpec, **options: Any) -> Model:
    """Open an artifact with the right backend; see the module docstring for what Model does.

    `path` is a file with the keyword arguments of runtime.spec.LoadSpec (backend, threads, device,
    delegates, providers, allow_fallback, overrides, verify; checked there, once), or a LoadSpec already
    built. verify: when a manifest.json beside the file records its sha256, refuse a mismatch
    (IntegrityError) before any interpreter sees the bytes; False skips that check (--no-verify).
    trust_model: run a model whose ops reach files, Python or the network (runtime.model_ops refuses it
    otherwise; --trust-model).
    """
    if isinstance(path, LoadSpec):
        if options:
            raise TypeError(f"load() takes a LoadSpec alone; put {', '.join(sorted(options))} in it "
                            "(dataclasses.replace(spec, ...))")
        spec = path
    else:
        spec = LoadSpec(path, **options)
    path = spec.path
    if path.is_dir():
        raise UsageError(f"model '{path}' is a folder; give a .tflite or .onnx file (edgeproof convert writes "
                         "e.g. RUN/artifacts/model.tflite-fp32.tflite)")
    family = family_of(path)
    if not path.is_file():
        raise UsageError(f"model file '{path}' not found; give a .tflite or .onnx file")
    profile = device_profile(spec.device) if spec.device else None
    name = choose_backend(path, family, spec.backend, profile)
    cls = BACKENDS[name].load_class()
    spec.check_backend(cls)
    verified = preflight(path, spec.verify, spec.trust_model)
    kwargs: dict[str, Any] = {"threads": spec.threads, "delegates": spec.delegates, "providers": spec.providers}
    if profile is not None:
        if kwargs["threads"] is None:
            kwargs["threads"] = getattr(profile, "threads", None)
        for key, value in cls.profile_options(profile).items():  # what this backend takes from a profile
            if kwargs.get(key) is None:
                kwargs[key] = value
        kwargs["install_hint"] = "; ".join(getattr(profile, "install", None) or []) or None
    be: Backend = cls(path, allow_fallback=spec.allow_fallback, verified_sha256=verified,
                      **{k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()})
    fmt = format_of(path)
    try:
        be.load()
        meta = be.read_meta() or synthesize_meta(be.input_spec, be.output_spec, fmt.name if fmt else None,
                                                 spec.overrides.get("channels"))
        check_io(path, family, be.input_spec, be.output_spec, meta.preprocess.height, meta.preprocess.width)
    except EdgeproofError:
        be.close()
        raise
    except Exception as exc:  # noqa: BLE001 - any other failure of a runtime on this file: a damaged model
        be.close()
        raise invalid(path, family, ort_reason(exc)) from None
    if profile is not None and getattr(profile, "artifacts", None):
        fmt_name = meta.format or (fmt.name if fmt else None)
        if fmt_name and fmt_name not in profile.artifacts:
            from edgeproof.runtime.backends.base import warn

            warn(f"device profile '{profile.name}' prefers {', '.join(profile.artifacts)}; '{path.name}' is "
                 f"{fmt_name} and may run mostly on the CPU")
    try:
        meta = apply_overrides(meta, be.input_spec, spec.overrides)
        n_out = declared_units(be.output_spec)
        if n_out is not None and n_out > 0:
            n_out = n_classes(int(n_out), "sigmoid" if meta.output_kind == "auto" else meta.output_kind)
        if spec.overrides.get("labels") is not None and n_out is not None and n_out > 0 \
                and len(meta.labels) != n_out:
            raise UsageError(f"--labels gives {len(meta.labels)} label(s) but '{path.name}' outputs {n_out} "
                             f"classes; give a labels file with {n_out} lines, one per class in output order")
        check_outputs(path, be, meta)
        check_used_shapes(path, family, be, meta)
    except BaseException:
        be.close()
        raise
    return Model(path, be, meta)
