"""Shared by the serve tests: hand-built ONNX models (no TensorFlow) and a real server process.

The colour model (tests/_runtime_models.color_onnx at 32x32) is a real classifier with an exact answer:
the mean of each RGB channel, scaled, then softmax, labels red/green/blue; a mostly-red photo is "red".
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from _runtime_models import LABELS, SIZE, color_onnx

KEY = "test-key-0123456789abcdef"


def _save(graph, path: Path, meta_format: str | None, batch=None) -> Path:
    import onnx
    from onnx import helper

    from edgeproof.contract import ArtifactMeta, Preprocess, TensorSpec
    from edgeproof.runtime.metadata import set_onnx_metadata

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if meta_format:
        meta = ArtifactMeta(labels=list(LABELS), preprocess=Preprocess(SIZE, SIZE), format=meta_format,
                            input=TensorSpec("image", [batch, SIZE, SIZE, 3], "float32"),
                            output=TensorSpec("probs", [batch, 3], "float32"))
        set_onnx_metadata(model, meta)
    onnx.save(model, str(path))
    return path


def colour_model(path: Path, batch: int | None = None) -> Path:
    """image (N,32,32,3) raw 0-255 RGB -> ReduceMean(H,W) -> scaled -> Softmax -> probs (N,3); `batch` fixes N."""
    if batch is None:
        return color_onnx(path, size=SIZE)
    from onnx import TensorProto, helper, numpy_helper

    dim = batch
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
         helper.make_node("Mul", ["mean", "k"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "colour", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [dim, SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [dim, 3])],
        initializer=[numpy_helper.from_array(np.array(0.05, np.float32), "k")])
    return _save(graph, path, "onnx-fp32", batch)


def looping_model(path: Path) -> Path:
    """Like the colour model, but a Loop whose condition never turns false runs first: inference never ends."""
    from onnx import TensorProto, helper, numpy_helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Identity", ["k_in"], ["k_out"])],
        "forever",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("k_in", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("k_out", TensorProto.FLOAT, [])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["", "true", "k"], ["k_final"], body=body),
         helper.make_node("ReduceMean", ["image"], ["mean"], axes=[1, 2], keepdims=0),
         helper.make_node("Mul", ["mean", "k_final"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "looping", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(np.array(0.05, np.float32), "k"),
                     numpy_helper.from_array(np.array(True), "true")])
    return _save(graph, path, "onnx-fp32")


def png_bytes(rgb: tuple[int, int, int], size: int = 48, seed: int = 0) -> bytes:
    """A noisy image dominated by one colour, PNG-encoded."""
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, size=(size, size, 3)).astype(np.int32) + np.array(rgb, np.int32)
    bgr = np.clip(img, 0, 255).astype(np.uint8)[:, :, ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(bgr))
    assert ok
    return buf.tobytes()


def jpeg_bytes(rgb: tuple[int, int, int], size: int = 64) -> bytes:
    import cv2

    bgr = np.full((size, size, 3), rgb[::-1], np.uint8)
    ok, buf = cv2.imencode(".jpg", bgr)
    assert ok
    return buf.tobytes()


class Server:
    """A real `python -m edgeproof serve` child on 127.0.0.1 and a free port (--port 0, read from its line)."""

    def __init__(self, proc: subprocess.Popen, url: str, line: str) -> None:
        self.proc, self.url, self.line = proc, url, line
        self._err: list[str] = []
        self._t = threading.Thread(target=self._drain, daemon=True)
        self._t.start()

    def _drain(self) -> None:
        for ln in self.proc.stderr:
            self._err.append(ln)

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str, str]:
        """Signal the server, wait for it; (exit code, all stdout, all stderr)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        rest = self.proc.stdout.read()  # stderr is read by the drain thread only
        self._t.join(10)
        return self.proc.returncode, self.line + (rest or ""), self.stderr

    def rss_kib(self) -> int:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", text)[1])


def serve_cmd(model: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "edgeproof", "serve", str(model), "--host", "127.0.0.1", "--port", "0", *args]


@contextmanager
def running(model: Path, *args: str, env: dict | None = None, startup: float = 60) -> Iterator[Server]:
    e = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    if "EDGEPROOF_API_KEY" not in (env or {}):  # only the key a test gives
        e.pop("EDGEPROOF_API_KEY", None)
    proc = subprocess.Popen(serve_cmd(model, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=e, start_new_session=True)
    line, deadline = "", time.monotonic() + startup
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("serving ") or not line and proc.poll() is not None:
            break
    m = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
    if not m:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"server did not start: {line!r} {out!r} {err!r}")
    server = Server(proc, m[1], line)
    try:
        yield server
    finally:
        if proc.poll() is None:
            server.stop(signal.SIGKILL, timeout=10)
