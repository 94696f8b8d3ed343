#!/usr/bin/env python
"""Soak: does RSS stay flat over a long run? A 10,000-frame video, and a live source faster than inference.

    python benchmarks/soak.py [--model MODEL] [--frames 10000] [-o benchmarks/results]
    python benchmarks/soak.py --cli            # the video part as a child `edgeproof run MODEL video.avi --json`
    python benchmarks/soak.py --pipeline OLD.py --parts live   # another pipeline module (before/after)
    python benchmarks/soak.py --minutes 30     # the server soak instead: benchmarks/serve_soak.py (HTTP + gRPC)

video: writes a 96x96 MJPG .avi with cv2.VideoWriter into a temp dir and runs it through the pipeline
(in-process, or with --cli through the real command), sampling VmRSS every --every frames.
live: a simulated camera (source.live = True) delivering --live-fps frames/s to the same model slowed
to --live-infer-ms per call: frames are dropped and counted; RSS is sampled by captured frame.
For each: RSS at --warmup, the max after it, growth (target < 10 MiB); JSON + a PNG of RSS vs frame.
Default model: the TF-free ONNX colour classifier of tests/_runtime_models.py (32x32), so a clean
checkout with only the venv can run it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc status (Linux only)")


def make_frame(i: int, size: int) -> np.ndarray:
    """A moving gradient with a coloured square: every frame differs, as a camera's would."""
    yy, xx = np.mgrid[:size, :size]
    img = np.empty((size, size, 3), np.uint8)
    for c in range(3):
        img[:, :, c] = (xx * (c + 1) + yy + 5 * i + 80 * c) % 256
    x0 = (7 * i) % (size - size // 4)
    img[size // 4: size // 2, x0: x0 + size // 4] = ((i * 50) % 256, 255 - (i * 30) % 256, 128)
    return img


def write_video(path: Path, frames: int, size: int) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (size, size))
    if not w.isOpened():
        raise SystemExit(f"cv2.VideoWriter cannot write MJPG {path}")
    for i in range(frames):
        w.write(make_frame(i, size))
    w.release()
    return path


def load_pipeline(path: str | None):
    if path is None:
        from edgeproof.runtime import pipeline

        return pipeline
    spec = importlib.util.spec_from_file_location("soak_pipeline", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def growth(samples: list[tuple[int, float]], warmup: int) -> dict:
    after = [(f, r) for f, r in samples if f >= warmup]
    if not after:
        return {"rss_warmup_mib": None, "rss_max_after_mib": None, "growth_mib": None}
    base, peak = after[0][1], max(r for _, r in after)
    return {"warmup_frame": after[0][0], "rss_warmup_mib": round(base, 2), "rss_max_after_mib": round(peak, 2),
            "growth_mib": round(peak - base, 2), "rss_end_mib": round(after[-1][1], 2)}


def video_inprocess(pipe, model, video: Path, every: int) -> tuple[dict, list]:
    from edgeproof.runtime.sources import open_source

    samples: list[tuple[int, float]] = []

    def on_result(r) -> None:
        if r.index % every == 0:
            samples.append((r.index, rss_mib()))

    s = pipe.run_pipeline(model, open_source(str(video)), on_result)
    return {"count": s.count, "dropped": getattr(s, "dropped", None), "seconds": round(s.seconds, 2),
            "fps": round(s.fps, 1), "stopped": s.stopped}, samples


def video_cli(model_path: Path, video: Path, every: int) -> tuple[dict, list]:
    """The real command in a child process; its RSS is read from /proc while its JSON lines stream in."""
    cmd = [sys.executable, "-m", "edgeproof", "run", str(model_path), str(video), "--json"]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    samples, summary = [], {}
    for line in child.stdout:
        d = json.loads(line)
        if "summary" in d:
            summary = d["summary"]
        elif d["index"] % every == 0:
            samples.append((d["index"], rss_mib(child.pid)))
    err = child.stderr.read()
    if child.wait() != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({child.returncode}): {err[-2000:]}")
    return {"command": " ".join(cmd[1:]), **{k: summary.get(k) for k in ("count", "dropped", "seconds", "fps",
                                                                        "stopped")}}, samples


class SlowModel:
    """The model, slowed to at least `delay_s` per predict (inference slower than capture)."""

    def __init__(self, model, delay_s: float) -> None:
        self.model, self.delay_s, self.preprocess = model, delay_s, model.preprocess

    def predict(self, x):
        time.sleep(self.delay_s)
        return self.model.predict(x)

    def topk(self, scores, k):
        return self.model.topk(scores, k)


def live(pipe, model, frames: int, fps: float, infer_ms: float, size: int, every: int) -> tuple[dict, list]:
    from edgeproof.runtime.sources import Item, Source

    samples: list[tuple[int, float]] = []

    class SimCamera(Source):
        kind, live, is_stream = "camera", True, True

        def __iter__(self):
            t0 = time.perf_counter()
            for i in range(frames):
                wait = t0 + i / fps - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                if i % every == 0:
                    samples.append((i, rss_mib()))
                yield Item(i, f"sim#{i}", frame=make_frame(i, size))
            self.stop_reason = "end of simulated camera"

    s = pipe.run_pipeline(SlowModel(model, infer_ms / 1e3), SimCamera("sim"), lambda r: None)
    return {"captured": frames, "capture_fps": fps, "infer_ms": infer_ms, "count": s.count,
            "dropped": getattr(s, "dropped", None), "seconds": round(s.seconds, 2), "stopped": s.stopped}, samples


def plot(parts: dict, dest: Path, warmup: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeproof.atomic import write_png

    fig, axes = plt.subplots(1, len(parts), figsize=(5.5 * len(parts), 3.6), squeeze=False)
    for ax, (name, p) in zip(axes[0], parts.items()):
        f, r = zip(*p["samples"]) if p["samples"] else ((), ())
        ax.plot(f, r, lw=1.2)
        ax.axvline(warmup, color="grey", ls=":", lw=1)
        if p["rss_warmup_mib"] is not None:  # the target, which also keeps the scale honest
            ax.axhline(p["rss_warmup_mib"] + 10, color="tab:red", ls="--", lw=1, label="warm-up RSS + 10 MiB")
            ax.set_ylim(min(r) - 2, max(max(r), p["rss_warmup_mib"] + 10) + 2)
            ax.legend(fontsize=8, loc="lower right")
        g = p["growth_mib"]
        ax.set_title(f"{name}: growth after frame {warmup}: {g} MiB" + (f", {p['dropped']} dropped"
                                                                         if p.get("dropped") else ""), fontsize=9)
        ax.set_xlabel("captured frame" if name == "live" else "frame")
        ax.set_ylabel("RSS (MiB)")
        ax.grid(alpha=0.3)
    write_png(fig, dest)


def main() -> int:
    if "--minutes" in sys.argv:  # the server soak has its own module and flags
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import serve_soak

        return serve_soak.main()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="an artifact edgeproof can load (default: a tiny TF-free ONNX model)")
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=96, help="video/camera frame side in pixels")
    ap.add_argument("--every", type=int, default=50, help="sample RSS every N frames")
    ap.add_argument("--warmup", type=int, default=500, help="frame after which growth is measured")
    ap.add_argument("--live-fps", type=float, default=1000.0)
    ap.add_argument("--live-infer-ms", type=float, default=3.0)
    ap.add_argument("--parts", default="video,live")
    ap.add_argument("--cli", action="store_true", help="run the video part as a child `edgeproof run ... --json`")
    ap.add_argument("--pipeline", help="a pipeline.py to use instead of edgeproof.runtime.pipeline (in-process)")
    ap.add_argument("-o", "--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="soak", help="file stem of the results (NAME.json, NAME.png)")
    args = ap.parse_args()

    from edgeproof.runtime import load

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="edgeproof-soak-"))
    model_path = Path(args.model) if args.model else None
    if model_path is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from _runtime_models import color_onnx

        model_path = color_onnx(tmp / "color.onnx-fp32.onnx", size=32)
    pipe = load_pipeline(args.pipeline)
    parts: dict[str, dict] = {}
    with load(model_path) as model:
        if "video" in args.parts:
            t = time.perf_counter()
            video = write_video(tmp / "soak.avi", args.frames, args.size)
            print(f"wrote {video} ({video.stat().st_size / 2**20:.1f} MiB, {args.frames} frames) in "
                  f"{time.perf_counter() - t:.1f} s", file=sys.stderr)
            res, samples = (video_cli(model_path, video, args.every) if args.cli
                            else video_inprocess(pipe, model, video, args.every))
            parts["video"] = {**res, **growth(samples, args.warmup), "samples": samples}
        if "live" in args.parts:
            res, samples = live(pipe, model, args.frames, args.live_fps, args.live_infer_ms, args.size, args.every)
            parts["live"] = {**res, **growth(samples, args.warmup), "samples": samples}
    for p in (tmp / "soak.avi", tmp / "color.onnx-fp32.onnx"):
        p.unlink(missing_ok=True)
    tmp.rmdir()
    report = {"command": "python benchmarks/soak.py " + " ".join(sys.argv[1:]), "model": str(args.model or
              "tiny ONNX colour classifier (tests/_runtime_models.color_onnx, 32x32)"),
              "pipeline": args.pipeline or "edgeproof.runtime.pipeline", "frames": args.frames,
              "frame_size": args.size, "warmup_frame": args.warmup, "target_growth_mib": 10,
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, "
                         f"CPython {platform.python_version()}",
              "date": time.strftime("%Y-%m-%d"), "parts": parts}
    (out / f"{args.name}.json").write_text(json.dumps(report, indent=1) + "\n")
    plot(parts, out / f"{args.name}.png", args.warmup)
    for name, p in parts.items():
        extra = f", dropped {p['dropped']} of {p['captured']}" if name == "live" else ""
        print(f"{name}: {p['count']} processed{extra} in {p['seconds']} s; RSS {p['rss_warmup_mib']} MiB at frame "
              f"{p.get('warmup_frame')}, max after {p['rss_max_after_mib']} MiB: growth {p['growth_mib']} MiB")
    print(f"wrote {out / (args.name + '.json')} and {out / (args.name + '.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
