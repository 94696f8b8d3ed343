"""Soak of `edgeproof serve`: steady bounded load over HTTP and gRPC with hostile connections mixed in.

    python benchmarks/soak.py --minutes 30                 # (soak.py hands --minutes to this module)
    python benchmarks/serve_soak.py --minutes 10 --rate 20 --out benchmarks/results/serve_soak.json

One real server on 127.0.0.1 (the TF-free ONNX colour classifier of tests/_runtime_models.py unless
--model), HTTP and gRPC (--grpc-port 0). --rate requests/s in total, paced, spread over four kinds:
HTTP /v1/classify (PNG), HTTP /v2 infer (FP32 JSON), gRPC ModelInfer (FP32 raw) and gRPC BYTES; 1 request
in 10 is bad (a body that is not an image: 400 / INVALID_ARGUMENT expected). Every --hostile-every s one
of: a 2 MiB header (431 expected), 50 half-open slowloris connections held 15 s (408/closed by the
server's 10 s deadline), a 20 MiB body with urllib (413), 4 concurrent 4000x4000 PNGs (400, over the
model-tied pixel cap). RSS is sampled every 10 s. Reported: RSS at 1 minute and at the end (growth, goal
< 5 %), 5xx / unexpected answers / transport errors (goal 0), p50/p99 per minute of the good requests
(goal: p99 steady). The load is bounded by --minutes and a request timeout of 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def start_server(model: Path) -> tuple[subprocess.Popen, str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    env.pop("EDGEPROOF_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "edgeproof", "serve", str(model), "--port", "0", "--grpc-port",
                             "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    line = proc.stdout.readline()
    m = re.search(r"at (http://127\.0\.0\.1:\d+)/ and gRPC at (127\.0\.0\.1:\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, m[1], m[2]


class Load:
    def __init__(self, url: str, grpc_target: str, size: int) -> None:
        import cv2
        import tritonclient.grpc as grpcclient

        self.url, self.g = url, grpcclient
        self.client = grpcclient.InferenceServerClient(grpc_target)
        rng = np.random.default_rng(0)
        img = rng.integers(0, 255, (48, 48, 3), np.uint8)
        self.png = cv2.imencode(".png", img)[1].tobytes()
        self.x = rng.uniform(0, 255, (1, size, size, 3)).astype(np.float32)
        self.lock = threading.Lock()
        self.latency: list[tuple[float, float]] = []  # (t since start, seconds) of good requests
        self.counts: dict[str, int] = {}

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def _http(self, path: str, data: bytes, ctype: str) -> int:
        req = urllib.request.Request(self.url + path, data=data, headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as e:
            e.read()
            return e.code

    def one(self, i: int, t_start: float) -> None:
        kind, bad = i % 4, i % 10 == 9
        t0 = time.perf_counter()
        try:
            if kind == 0:
                status = self._http("/v1/classify", b"not an image" if bad else self.png, "image/png")
            elif kind == 1:
                data = ["x"] if bad else self.x.ravel().tolist()
                body = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(self.x.shape),
                                               "data": data}]}).encode()
                status = self._http("/v2/models/colour/infer", body, "application/json")
            else:
                status = self._grpc(kind == 2, bad)
        except Exception as exc:  # noqa: BLE001 - counted: a transport error is a soak failure
            self.count(f"transport error: {type(exc).__name__}")
            return
        want = 400 if bad else 200
        self.count(f"{'bad' if bad else 'good'} -> {status}")
        if status >= 500 or status != want:
            self.count("unexpected")
        elif not bad:
            with self.lock:
                self.latency.append((time.perf_counter() - t_start, time.perf_counter() - t0))

    def _grpc(self, fp32: bool, bad: bool) -> int:
        from tritonclient.utils import InferenceServerException

        g = self.g
        if fp32:
            inp = g.InferInput("image", [1, 8, 8, 3] if bad else list(self.x.shape), "FP32")
            inp.set_data_from_numpy(np.zeros((1, 8, 8, 3), np.float32) if bad else self.x)
        else:
            inp = g.InferInput("image", [1], "BYTES")
            inp.set_data_from_numpy(np.array([b"not an image" if bad else self.png], dtype=np.object_))
        try:
            self.client.infer("colour", [inp], client_timeout=30)
            return 200
        except InferenceServerException as exc:
            code = str(exc.status())
            return 400 if "INVALID_ARGUMENT" in code else 503 if "UNAVAILABLE" in code else 599


def hostile(kind: int, host: str, port: int, url: str, big_png: bytes, load: Load) -> None:
    if kind == 0:  # a 2 MiB header
        s = socket.create_connection((host, port))
        try:
            s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 2**21)
        except OSError:
            pass
        s.settimeout(10)
        try:
            load.count("hostile header -> " + s.recv(64).split(b" ")[1].decode())
        except (OSError, IndexError):
            load.count("hostile header -> closed")
        s.close()
    elif kind == 1:  # slowloris
        held = []
        for _ in range(50):
            c = socket.create_connection((host, port))
            c.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Slow: ")
            held.append(c)
        time.sleep(15)
        closed = 0
        for c in held:
            c.settimeout(0.5)
            try:  # the server answered 408 and closed, or closed: counted; still open (a timeout): not
                data = c.recv(64)
                closed += data == b"" or data.startswith(b"HTTP/1.1 408")
            except TimeoutError:
                pass
            except OSError:
                closed += 1
            c.close()
        load.count(f"hostile slowloris closed by the server: {closed}/50")
    elif kind == 2:  # a 20 MiB body
        load.count("hostile 20 MiB body -> " + str(load._http("/v1/classify", b"x" * (20 * 2**20), "image/png")))
    else:  # 4 concurrent huge PNGs
        with ThreadPoolExecutor(4) as pool:
            for st in pool.map(lambda _: load._http("/v1/classify", big_png, "image/png"), range(4)):
                load.count(f"hostile 16 MP PNG -> {st}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=20, help="requests per second, all kinds together")
    ap.add_argument("--hostile-every", type=float, default=30, help="seconds between hostile episodes")
    ap.add_argument("--model", help="an artifact (default: the tests' 32x32 ONNX colour classifier)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_soak.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    from _runtime_models import color_onnx
    from test_serve_memory import big_png

    tmp = Path(tempfile.mkdtemp(prefix="serve-soak-"))
    model = Path(args.model) if args.model else color_onnx(tmp / "colour.onnx", size=32)
    proc, url, target = start_server(model)
    host, port = url[len("http://"):].split(":")
    load = Load(url, target, 32)
    huge = big_png(4000, 4000)
    rss: list[tuple[float, float]] = []
    t_start = time.perf_counter()
    end = t_start + args.minutes * 60
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss.append((time.perf_counter() - t_start, rss_mib(proc.pid)))
            stop.wait(10)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    workers, hostiles = ThreadPoolExecutor(16), ThreadPoolExecutor(2)
    i, next_hostile, h = 0, t_start + 5, 0
    try:
        while time.perf_counter() < end:
            workers.submit(load.one, i, t_start)
            i += 1
            now = time.perf_counter()
            if now >= next_hostile:
                hostiles.submit(hostile, h % 4, host, int(port), url, huge, load)
                h, next_hostile = h + 1, now + args.hostile_every
            time.sleep(max(0.0, t_start + i / args.rate - time.perf_counter()))
        workers.shutdown(wait=True)
        hostiles.shutdown(wait=True)
    finally:
        stop.set()
        sampler.join(15)
        rss.append((time.perf_counter() - t_start, rss_mib(proc.pid)))
        proc.terminate()
        proc.wait(60)
    per_minute = []
    for m in range(int(np.ceil(args.minutes))):
        lat = sorted(s for t, s in load.latency if m * 60 <= t < (m + 1) * 60)
        if lat:
            per_minute.append({"minute": m + 1, "n": len(lat), "p50_ms": round(statistics.median(lat) * 1000, 2),
                               "p99_ms": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))] * 1000, 2)})
    at_1min = next((v for t, v in rss if t >= 60), rss[0][1])
    fivexx = sum(n for k, n in load.counts.items() if re.search(r"-> 5\d\d$", k))
    result = {
        "what": "serve soak: HTTP + gRPC at a steady rate, 1 bad request in 10, hostile connections mixed in",
        "command": " ".join(["python", "benchmarks/serve_soak.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "minutes": args.minutes,
        "rate_per_s": args.rate, "requests": i, "hostile_episodes": h,
        "rss_mib": {"at_1_min": round(at_1min, 1), "end": round(rss[-1][1], 1), "max": round(max(v for _, v in rss), 1),
                    "growth_pct_after_1_min": round(100 * (rss[-1][1] - at_1min) / at_1min, 2),
                    "samples_every_10_s": [[round(t), round(v, 1)] for t, v in rss]},
        "answers": dict(sorted(load.counts.items())), "responses_5xx": fivexx,
        "unexpected": load.counts.get("unexpected", 0), "latency_per_minute": per_minute,
        "goals": {"rss_growth_lt_5pct": (rss[-1][1] - at_1min) / at_1min < 0.05, "no_5xx": fivexx == 0,
                  "p99_steady_last_vs_first_minute": round(per_minute[-1]["p99_ms"] / per_minute[0]["p99_ms"], 2)
                  if per_minute else None},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rss_mib"} | {"rss": {
        k: v for k, v in result["rss_mib"].items() if k != "samples_every_10_s"}}, indent=1))
    return 0 if result["goals"]["rss_growth_lt_5pct"] and fivexx == 0 and not result["unexpected"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
