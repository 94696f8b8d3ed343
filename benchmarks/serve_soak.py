"""Soak of `edgeproof serve`: steady bounded load over HTTP and gRPC with hostile connections mixed in.

    python benchmarks/soak.py --minutes 30                 # (soak.py hands --minutes to this module)
    python benchmarks/serve_soak.py --minutes 10 --rate 20 --out benchmarks/results/serve_soak.json

One real server on 127.0.0.1 (the TF-free ONNX colour classifier of tests/_runtime_models.py unless
--model), HTTP and gRPC (--grpc-port 0). --rate requests/s in total, paced, spread over four kinds:
HTTP /v1/classify (PNG), HTTP /v2 infer (FP32 JSON), gRPC ModelInfer (FP32 raw) and gRPC BYTES; 1 request
in 10 is bad (a body that is not an image: 400 / INVALID_ARGUMENT expected). Every --hostile-every s one
of: a 2 MiB header (431 expected), 50 half-open slowloris connections held 15 s (408/closed by the
server's 10 s deadline), a 20 MiB body with urllib (413), 4 concurrent 4000x4000 PNGs (400, over the
model-tied pixel cap). With --control, a bare Starlette handler around the same model (serve_load.py's
BARE_APP) gets a copy of every good PNG request at the same moment: the same machine, none of the
server's layers, so its per-minute p99 beside the server's PNG p99 says which swings are the machine's.
Every 10 s: the server's RSS and CPU time, the machine's 1-minute load average and
its CPU pressure (/proc/pressure/cpu "some": the share of time a runnable task waited for a CPU).

Latency is timed from each request's scheduled send time (a paced client's view: time a request waited
for a free client thread counts), and also from the moment it was sent ("service"). Reported: RSS at 1
minute and at the end (growth, goal < 5 %), 5xx / unexpected answers / transport errors / hostile episodes
not answered as designed (goal 0), p50/p99 per minute and per 5 minutes with the load average, CPU
pressure and server CPU of the same window, p99 inside and outside hostile episodes, and whether p99 is
steady (the last third of the run's p99 within 1.5x the first third's, minute 1 left out as warm-up). The
load is bounded by --minutes and a request timeout of 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
HOSTILE_EXPECTED = {"header": {"431"}, "slowloris": {"50/50"}, "body": {"413"}, "png": {"400"}}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_pressure_us() -> float | None:
    """Total µs some runnable task waited for a CPU (PSI), or None on a kernel without it."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return float(some.rsplit("total=", 1)[1])


def procs_running() -> int:
    """Tasks runnable on the machine right now (/proc/stat), all users together."""
    return next(int(x.split()[1]) for x in Path("/proc/stat").read_text().splitlines() if x.startswith("procs_running"))


def start_server(model: Path, log: Path) -> tuple[subprocess.Popen, str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    env.pop("EDGEPROOF_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "edgeproof", "serve", str(model), "--port", "0", "--grpc-port",
                             "0"], stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env)
    line = proc.stdout.readline()
    m = re.search(r"at (http://127\.0\.0\.1:\d+)/ and gRPC at (127\.0\.0\.1:\d+)", line)
    if not m:
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}; its log: {log}")
    threading.Thread(target=proc.stdout.read, daemon=True).start()  # drained: a full pipe would stall it
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
        self.bodies = {bad: json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": list(self.x.shape),
                                                    "data": ["x"] if bad else self.x.ravel().tolist()}]}).encode()
                       for bad in (False, True)}  # built once: the client's JSON encoding is not timed
        self.lock = threading.Lock()
        self.latency: list[tuple[float, float, float, bool, int]] = []  # good: (t sched, total, service, hostile?, kind)
        self.control: list[tuple[float, float]] = []  # the control handler's PNG requests: (t sched, total s)
        self.control_url: str | None = None
        self.counts: dict[str, int] = {}
        self.hostile_now = 0  # hostile episodes running

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

    def one(self, i: int, scheduled: float, t_start: float) -> None:
        kind, bad = i % 4, i % 10 == 9
        hostile_at_send = self.hostile_now > 0
        t0 = time.perf_counter()
        try:
            if kind == 0:
                status = self._http("/v1/classify", b"not an image" if bad else self.png, "image/png")
            elif kind == 1:
                status = self._http("/v2/models/colour/infer", self.bodies[bad], "application/json")
            else:
                status = self._grpc(kind == 2, bad)
        except Exception as exc:  # noqa: BLE001 - counted: a transport error is a soak failure
            self.count(f"transport error: {type(exc).__name__}")
            self.count("unexpected")
            return
        t1 = time.perf_counter()
        want = 400 if bad else 200
        self.count(f"{'bad' if bad else 'good'} -> {status}")
        if status != want:
            self.count("unexpected")
        elif not bad:
            with self.lock:
                self.latency.append((scheduled - t_start, t1 - scheduled, t1 - t0, hostile_at_send, kind))

    def control_one(self, scheduled: float, t_start: float) -> None:
        """The same PNG to the bare control handler (its own counts: never part of the server's figures)."""
        try:
            with urllib.request.urlopen(urllib.request.Request(self.control_url + "/v1/classify", data=self.png,
                                                               headers={"Content-Type": "image/png"}), timeout=30) as r:
                r.read()
                status = r.status
        except (OSError, urllib.error.HTTPError) as exc:
            self.count(f"control error: {type(exc).__name__}")
            return
        self.count(f"control -> {status}")
        if status == 200:
            with self.lock:
                self.control.append((scheduled - t_start, time.perf_counter() - scheduled))

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


def hostile_episode(kind: int, host: str, port: int, big_png: bytes, load: Load) -> None:
    """One episode; every outcome is counted, and one not in HOSTILE_EXPECTED also as unexpected."""
    name = ("header", "slowloris", "body", "png")[kind]
    with load.lock:
        load.hostile_now += 1
    try:
        outcomes = _hostile(kind, host, port, big_png, load)
    except Exception as exc:  # noqa: BLE001 - counted: an episode that failed on the client is reported
        outcomes = [f"client error {type(exc).__name__}"]
    finally:
        with load.lock:
            load.hostile_now -= 1
    for out in outcomes:
        load.count(f"hostile {name} -> {out}")
        if out not in HOSTILE_EXPECTED[name]:
            load.count("unexpected")


def _hostile(kind: int, host: str, port: int, big_png: bytes, load: Load) -> list[str]:
    if kind == 0:  # a 2 MiB header
        with socket.create_connection((host, port)) as s:
            try:
                s.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 2**21)
            except OSError:
                pass  # the server may close mid-send; its answer is read below
            s.settimeout(10)
            try:
                return [s.recv(64).split(b" ")[1].decode()]
            except (OSError, IndexError):
                return ["closed without a status"]
    if kind == 1:  # slowloris
        held = []
        try:
            for _ in range(50):
                c = socket.create_connection((host, port))
                held.append(c)
                c.sendall(b"GET /v2/health/live HTTP/1.1\r\nX-Slow: ")
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
            return [f"{closed}/50"]
        finally:
            for c in held:
                c.close()
    if kind == 2:  # a 20 MiB body
        return [str(load._http("/v1/classify", b"x" * (20 * 2**20), "image/png"))]
    with ThreadPoolExecutor(4) as pool:  # 4 concurrent huge PNGs
        return [str(st) for st in pool.map(lambda _: load._http("/v1/classify", big_png, "image/png"), range(4))]


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)) * 1000, 2) if values else float("nan")


def window_stats(load: Load, samples: list[dict], lo: float, hi: float) -> dict:
    """Latency of the good requests scheduled in [lo, hi) with the machine's and server's figures of it."""
    rows = [r for r in load.latency if lo <= r[0] < hi]
    tot, svc = [r[1] for r in rows], [r[2] for r in rows]
    inside = [s for s in samples if lo <= s["t"] <= hi + 10]  # the samples that close this window's 10 s steps
    out = {"n": len(rows), "p50_ms": pct(tot, 50), "p99_ms": pct(tot, 99), "service_p50_ms": pct(svc, 50),
           "service_p99_ms": pct(svc, 99), "max_ms": pct(tot, 100)}
    if load.control_url:
        out["png_p50_ms"] = pct([r[1] for r in rows if r[4] == 0], 50)
        out["png_p99_ms"] = pct([r[1] for r in rows if r[4] == 0], 99)
        ctl = [c[1] for c in load.control if lo <= c[0] < hi]
        out["control_png_p50_ms"], out["control_png_p99_ms"] = pct(ctl, 50), pct(ctl, 99)
    if inside:
        out["load_avg_1m"] = round(float(np.mean([s["load1"] for s in inside])), 2)
        if inside[0].get("cpu_pressure_pct") is not None:
            out["cpu_pressure_pct"] = round(float(np.mean([s["cpu_pressure_pct"] for s in inside])), 1)
        out["server_cpu_pct"] = round(float(np.mean([s["server_cpu_pct"] for s in inside])), 1)
    return out


def steadiness(load: Load, per_minute: list[dict], minutes: float) -> dict:
    """p99 of the first and last third of the run (minute 1 left out), and how p99 follows the machine."""
    start, span = 60.0, max(0.0, minutes * 60 - 60) / 3
    thirds = [[r[1] for r in load.latency if start + k * span <= r[0] < start + (k + 1) * span] for k in range(3)]
    first, last = pct(thirds[0], 99), pct(thirds[2], 99)
    rows = [m for m in per_minute[1:] if "cpu_pressure_pct" in m]
    corr = {}
    for key in ("cpu_pressure_pct", "load_avg_1m", "server_cpu_pct"):
        if len(rows) >= 4 and np.std([m[key] for m in rows]) > 0:
            corr[key] = round(float(np.corrcoef([m["p99_ms"] for m in rows], [m[key] for m in rows])[0, 1]), 2)
    if load.control_url and len(per_minute) >= 5:
        rows2 = per_minute[1:]
        corr["control_png_p99_vs_server_png_p99"] = round(float(np.corrcoef(
            [m["png_p99_ms"] for m in rows2], [m["control_png_p99_ms"] for m in rows2])[0, 1]), 2)
    calm = [r[1] for r in load.latency if r[0] >= 60 and not r[3]]
    during = [r[1] for r in load.latency if r[0] >= 60 and r[3]]
    return {"p99_ms_thirds": [pct(t, 99) for t in thirds], "p99_last_vs_first_third": round(last / first, 2)
            if thirds[0] and thirds[2] else None, "steady": bool(thirds[0] and thirds[2] and last <= 1.5 * first),
            "per_minute_p99_correlation_with": corr,
            "p99_ms_outside_hostile_episodes": pct(calm, 99), "p99_ms_during_hostile_episodes": pct(during, 99),
            "n_during_hostile_episodes": len(during)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=float, default=20, help="requests per second, all kinds together")
    ap.add_argument("--hostile-every", type=float, default=30, help="seconds between hostile episodes")
    ap.add_argument("--model", help="an artifact (default: the tests' 32x32 ONNX colour classifier)")
    ap.add_argument("--control", action="store_true", help="also pace the PNG requests to a bare handler")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve_soak.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(ROOT))
    from _runtime_models import color_onnx
    from test_serve_memory import big_png

    tmp = Path(tempfile.mkdtemp(prefix="serve-soak-"))
    model = Path(args.model) if args.model else color_onnx(tmp / "colour.onnx", size=32)
    proc, url, target = start_server(model, tmp / "server.log")
    host, port = url[len("http://"):].split(":")
    load = Load(url, target, 32)
    control = None
    if args.control:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import serve_load

        cport = serve_load.free_port()
        control = serve_load.start([sys.executable, "-c", serve_load.BARE_APP, str(model), str(cport)], r"ready")[0]
        load.control_url = f"http://127.0.0.1:{cport}"
    huge = big_png(4000, 4000)
    samples: list[dict] = []
    t_start = time.perf_counter()
    end = t_start + args.minutes * 60
    stop = threading.Event()

    def sample() -> None:
        last = (time.perf_counter(), cpu_seconds(proc.pid), cpu_pressure_us())
        while True:
            now, cpu, psi = time.perf_counter(), cpu_seconds(proc.pid), cpu_pressure_us()
            dt = max(now - last[0], 1e-6)
            samples.append({"t": round(now - t_start, 1), "rss_mib": round(rss_mib(proc.pid), 1),
                            "load1": round(os.getloadavg()[0], 2), "procs_running": procs_running(),
                            "server_cpu_pct": round(100 * (cpu - last[1]) / dt, 1),
                            "cpu_pressure_pct": None if psi is None else round((psi - last[2]) / dt / 1e4, 1)})
            last = (now, cpu, psi)
            if stop.wait(10):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    workers, hostiles = ThreadPoolExecutor(16), ThreadPoolExecutor(2)
    futures: list[Future] = []
    i, next_hostile, h, lag = 0, t_start + 5, 0, []
    try:
        while time.perf_counter() < end:
            scheduled = t_start + i / args.rate
            lag.append(time.perf_counter() - scheduled)
            workers.submit(load.one, i, scheduled, t_start)
            if control is not None and i % 4 == 0 and i % 10 != 9:
                workers.submit(load.control_one, scheduled, t_start)
            i += 1
            now = time.perf_counter()
            if now >= next_hostile:
                futures.append(hostiles.submit(hostile_episode, h % 4, host, int(port), huge, load))
                h, next_hostile = h + 1, now + args.hostile_every
            time.sleep(max(0.0, t_start + i / args.rate - time.perf_counter()))
        workers.shutdown(wait=True)
        hostiles.shutdown(wait=True)
        for f in futures:
            f.result()  # hostile_episode counts its own failures; this re-raises only a bug in it
    finally:
        stop.set()
        sampler.join(15)
        final_rss = rss_mib(proc.pid)
        for p in (proc, control):
            if p is not None:
                p.terminate()
                p.wait(60)
    rss = [(s["t"], s["rss_mib"]) for s in samples] + [(round(time.perf_counter() - t_start, 1), final_rss)]
    per_minute = [{"minute": m + 1, **window_stats(load, samples, m * 60, (m + 1) * 60)}
                  for m in range(int(np.ceil(args.minutes)))]
    per_5_minutes = [{"minutes": f"{m + 1}-{min(m + 5, int(np.ceil(args.minutes)))}",
                      **window_stats(load, samples, m * 60, (m + 5) * 60)} for m in range(0, int(np.ceil(args.minutes)), 5)]
    at_1min = next((v for t, v in rss if t >= 60), rss[0][1])
    fivexx = sum(n for k, n in load.counts.items() if re.search(r"-> 5\d\d$", k))
    log_lines = (tmp / "server.log").read_text(errors="replace").splitlines()
    loads = [s["load1"] for s in samples]
    result = {
        "what": "serve soak: HTTP + gRPC at a steady rate, 1 bad request in 10, hostile connections mixed in",
        "command": " ".join(["python", "benchmarks/serve_soak.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "minutes": args.minutes, "rate_per_s": args.rate, "requests": i, "hostile_episodes": h,
        "client_send_lag_ms": {"p50": pct(lag, 50), "p99": pct(lag, 99), "max": pct(lag, 100)},
        "machine_load_avg_1m": {"min": min(loads), "mean": round(float(np.mean(loads)), 2), "max": max(loads)},
        "rss_mib": {"at_1_min": at_1min, "end": round(final_rss, 1), "max": round(max(v for _, v in rss), 1),
                    "growth_pct_after_1_min": round(100 * (final_rss - at_1min) / at_1min, 2)},
        "answers": dict(sorted(load.counts.items())), "responses_5xx": fivexx,
        "unexpected": load.counts.get("unexpected", 0),
        "server_log": {"lines": len(log_lines), "errors": sum("ERROR" in x for x in log_lines), "last": log_lines[-5:]},
        "latency_per_5_minutes": per_5_minutes, "p99": steadiness(load, per_minute, args.minutes),
        "latency_per_minute": per_minute,
        "samples_every_10_s": samples,
    }
    result["goals"] = {"rss_growth_lt_5pct": (final_rss - at_1min) / at_1min < 0.05, "no_5xx": fivexx == 0,
                       "no_unexpected": not result["unexpected"], "p99_steady": result["p99"]["steady"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("samples_every_10_s", "latency_per_minute")},
                     indent=1))
    return 0 if all(v for k, v in result["goals"].items() if k != "p99_steady") else 1


if __name__ == "__main__":
    raise SystemExit(main())
