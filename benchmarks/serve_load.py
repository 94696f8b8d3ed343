"""Load benchmark of `edgeproof serve`: the same images through several paths, side by side, bounded.

    python benchmarks/serve_load.py                        # 10,000 requests per server path at concurrency 32
    python benchmarks/serve_load.py --requests 2000 --models conv --out /tmp/x.json

Paths (one model, the same images, 1 interpreter thread each):
  in-process   decode + preprocess + Model.predict in a loop (no HTTP): the floor;
  bare         a minimal Starlette handler on the same uvicorn stack around the same Model (decode in a
               thread, one lock around predict): what a user would write by hand;
  serve        `edgeproof serve --max-batch 1` with an API key (auth, limits, metrics, the queue; no batching);
  serve-batch  `edgeproof serve --max-batch 8 --batch-timeout-ms T` (dynamic batching), one path per T
               in --batch-timeouts (default 2 and 0).
Servers listen on 127.0.0.1 on free ports. Server paths run interleaved in rounds (requests split
evenly), so machine noise hits them alike; each runs the same number of requests. The client is a
small keep-alive HTTP/1.1 client on asyncio (cheap, so it steals little CPU from the servers).

Models are built here with onnx (no TensorFlow, nothing downloaded):
  dense   64x64x3 -> 2 strided convs -> Flatten(8192) -> Dense 1024 -> Dense 10: its 32 MiB dense layer makes
          one image per call memory-bound, so batching amortizes the weights (where batching helps);
  conv    96x96x3 -> 5 convs (16-128 channels) -> global pool -> Dense 10: compute-bound, batching buys
          little on a CPU (where it does not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KEY = "bench-key-0123456789abcdef"  # every client sends it; the bare handler ignores it
BARE_APP = """
import asyncio, sys, threading
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.routing import Route
import uvicorn
from edgeproof.runtime import load
from edgeproof.runtime.preprocess import decode, prepare

model = load(sys.argv[1], threads=1)
lock = threading.Lock()

def work(body):
    x = prepare(decode(body), model.preprocess)[None]
    with lock:
        p = model.predict(x)
    return [{"label": lb, "score": s} for lb, s in model.topk(p, 5)[0]]

async def classify(request):
    return JSONResponse({"top_k": await run_in_threadpool(work, await request.body())})

app = Starlette(routes=[Route("/v1/classify", classify, methods=["POST"])])
config = uvicorn.Config(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False)
server = uvicorn.Server(config)
print("ready", flush=True)
server.run()
"""


# ---------------------------------------------------------------- models

def _conv(name, x, cin, cout, stride, rng, nodes, inits):
    from onnx import numpy_helper
    from onnx.helper import make_node

    w = rng.normal(0, (2 / (9 * cin)) ** 0.5, (cout, cin, 3, 3)).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b")]
    nodes += [make_node("Conv", [x, f"{name}_w", f"{name}_b"], [f"{name}_c"], strides=[stride, stride],
                        pads=[1, 1, 1, 1]), make_node("Relu", [f"{name}_c"], [f"{name}_r"])]
    return f"{name}_r"


def build_model(kind: str, path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgeproof.contract import ArtifactMeta, Preprocess, TensorSpec
    from edgeproof.runtime.metadata import set_onnx_metadata

    rng = np.random.default_rng(0)
    size = 64 if kind == "dense" else 96
    nodes = [helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Mul", ["nchw", "scale"], ["x0"])]
    inits = [numpy_helper.from_array(np.array(1 / 255, np.float32), "scale")]
    if kind == "dense":
        x = _conv("c1", "x0", 3, 16, 2, rng, nodes, inits)
        x = _conv("c2", x, 16, 32, 2, rng, nodes, inits)
        nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
        feat, widths = 32 * 16 * 16, [1024, 10]
        x = "flat"
    else:
        x = "x0"
        for i, (cin, cout, s) in enumerate([(3, 16, 2), (16, 32, 2), (32, 64, 2), (64, 128, 1), (128, 128, 2)]):
            x = _conv(f"c{i}", x, cin, cout, s, rng, nodes, inits)
        nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
        nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
        feat, widths, x = 128, [10], "flat"
    for i, width in enumerate(widths):
        w = rng.normal(0, (2 / feat) ** 0.5, (feat, width)).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"d{i}_w"), numpy_helper.from_array(np.zeros(width, np.float32), f"d{i}_b")]
        nodes.append(helper.make_node("Gemm", [x, f"d{i}_w", f"d{i}_b"], [f"d{i}"]))
        x = f"d{i}"
        if i < len(widths) - 1:
            nodes.append(helper.make_node("Relu", [x], [f"d{i}_r"]))
            x = f"d{i}_r"
        feat = width
    nodes.append(helper.make_node("Softmax", [x], ["probs"], axis=1))
    graph = helper.make_graph(nodes, kind, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", size, size, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    set_onnx_metadata(model, ArtifactMeta(labels=[f"class_{i}" for i in range(10)], preprocess=Preprocess(size, size),
                                          format="onnx-fp32", input=TensorSpec("image", [None, size, size, 3], "float32"),
                                          output=TensorSpec("probs", [None, 10], "float32")))
    onnx.save(model, str(path))
    return path


def make_images(n: int, size: int) -> list[bytes]:
    import cv2

    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        img = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (5, 5), 0)
        out.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


# ---------------------------------------------------------------- servers

def start(cmd: list[str], pattern: str, env=None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        m = re.search(pattern, line)
        if m:
            return proc, m[1] if m.groups() else line
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"server did not start: {' '.join(cmd)}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far: the overhead measure noise hurts least."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- client

async def _worker(host: str, port: int, requests: list[bytes], lat: list[float], errors: list[str], deadline: float):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for req in requests:
            if time.perf_counter() > deadline:
                errors.append("time limit")
                return
            t0 = time.perf_counter()
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            n = int(re.search(rb"(?i)content-length: *(\d+)", head)[1])
            body = await reader.readexactly(n)
            lat.append(time.perf_counter() - t0)
            if status != 200 or b'"top_k"' not in body:
                errors.append(f"HTTP {status}")
    except (OSError, asyncio.IncompleteReadError) as exc:
        errors.append(type(exc).__name__)
    finally:
        writer.close()


async def load(url: str, images: list[bytes], n: int, concurrency: int, limit_s: float) -> dict:
    host, port = url.removeprefix("http://").split(":")
    reqs = [b"POST /v1/classify HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer " + KEY.encode()
            + b"\r\nContent-Type: image/jpeg\r\nContent-Length: "
            + str(len(im)).encode() + b"\r\n\r\n" + im for im in images]
    per = [[reqs[(w + i * concurrency) % len(reqs)] for i in range(n // concurrency + (w < n % concurrency))]
           for w in range(concurrency)]
    lat, errors = [], []
    t0 = time.perf_counter()
    await asyncio.gather(*(_worker(host, int(port), p, lat, errors, t0 + limit_s) for p in per))
    return {"seconds": time.perf_counter() - t0, "latencies": lat, "errors": errors}


def in_process(model_path: Path, images: list[bytes], n: int) -> dict:
    from edgeproof.runtime import load as load_model
    from edgeproof.runtime.preprocess import decode, prepare

    lat = []
    with load_model(model_path, threads=1) as m:
        for im in images[:8]:
            m.predict(prepare(decode(im), m.preprocess)[None])
        t0 = time.perf_counter()
        for i in range(n):
            t1 = time.perf_counter()
            m.topk(m.predict(prepare(decode(images[i % len(images)]), m.preprocess)[None]), 5)
            lat.append(time.perf_counter() - t1)
        seconds = time.perf_counter() - t0
        x = np.stack([prepare(decode(im), m.preprocess) for im in images[:16]])
        t1 = time.perf_counter()
        for _ in range(20):
            m.predict(x[:1])
        one = (time.perf_counter() - t1) / 20
        t1 = time.perf_counter()
        for _ in range(20):
            m.predict(x)
        sixteen = (time.perf_counter() - t1) / 20 / 16
    return {"seconds": seconds, "latencies": lat, "errors": [],
            "predict_ms_per_image": {"batch1": one * 1e3, "batch16": sixteen * 1e3}}


def summary(r: dict) -> dict:
    lat = sorted(r["latencies"])
    q = (lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3) if lat else (lambda p: float("nan"))
    return {"requests": len(lat), "errors": len(r["errors"]), "seconds": round(r["seconds"], 2),
            "throughput": round(len(lat) / r["seconds"], 1) if r["seconds"] else 0.0,
            "p50_ms": round(q(0.50), 2), "p90_ms": round(q(0.90), 2), "p99_ms": round(q(0.99), 2),
            **({"server_cpu_ms_per_request": round(r["cpu"] / len(lat) * 1e3, 3)} if "cpu" in r and lat else {}),
            **({"error_kinds": sorted(set(r["errors"]))[:5]} if r["errors"] else {}),
            **({"predict_ms_per_image": {k: round(v, 3) for k, v in r["predict_ms_per_image"].items()}}
               if "predict_ms_per_image" in r else {})}


def bench_model(kind: str, root: Path, args) -> dict:
    model = build_model(kind, root / f"{kind}.onnx")
    images = make_images(64, 80 if kind == "dense" else 120)
    py = sys.executable
    serve = [py, "-m", "edgeproof", "serve", str(model), "--port", "0", "--threads", "1", "--max-queue", "4096"]
    pattern = r"at (http://127\.0\.0\.1:\d+)/"
    procs = {}
    try:
        port = free_port()
        procs["bare"] = start([py, "-c", BARE_APP, str(model), str(port)], r"ready")
        procs["bare"] = (procs["bare"][0], f"http://127.0.0.1:{port}")
        env = {**os.environ, "EDGEPROOF_API_KEY": KEY}
        procs["serve"] = start(serve + ["--max-batch", "1"], pattern, env)
        for t in args.batch_timeouts:
            procs[f"serve-batch-{t:g}ms"] = start(serve + ["--max-batch", str(args.max_batch), "--batch-timeout-ms",
                                                           str(t)], pattern, env)
        time.sleep(1.0)
        results = {"in-process": summary(in_process(model, images, min(args.requests, 3000)))}
        per_round: dict = {}
        for conc, n in ((args.concurrency, args.requests), (1, args.requests_c1)):
            raw = {name: {"seconds": 0.0, "latencies": [], "errors": [], "cpu": 0.0, "round_p50": [],
                          "round_rps": []} for name in procs}
            rounds = max(1, args.rounds)
            for rnd in range(rounds):
                order = list(procs) if rnd % 2 == 0 else list(reversed(procs))
                for name in order:
                    asyncio.run(load(procs[name][1], images, 64, min(conc, 8), 30))  # warm-up, not counted
                    cpu0 = cpu_seconds(procs[name][0].pid)
                    part = asyncio.run(load(procs[name][1], images, n // rounds, conc, args.limit_s))
                    raw[name]["cpu"] += cpu_seconds(procs[name][0].pid) - cpu0
                    raw[name]["round_p50"].append(statistics.median(part["latencies"]) if part["latencies"] else 0)
                    raw[name]["round_rps"].append(len(part["latencies"]) / part["seconds"])
                    for k in ("latencies", "errors"):
                        raw[name][k] += part[k]
                    raw[name]["seconds"] += part["seconds"]
            results[f"c{conc}"] = {name: {**summary(r), "round_p50_ms": [round(v * 1e3, 3) for v in r["round_p50"]]}
                                   for name, r in raw.items()}
            per_round[f"c{conc}"] = raw
    finally:
        for proc, _ in procs.values():
            proc.terminate()
        for proc, _ in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    c = results[f"c{args.concurrency}"]
    c1 = results["c1"]

    def round_ratio(conc: str, key: str, a: str, b: str) -> float:
        """Median over rounds of a/b measured in the same round: drifts in machine load cancel out."""
        ra, rb = per_round[conc][a][key], per_round[conc][b][key]
        return round(statistics.median(x / y for x, y in zip(ra, rb) if y), 3)

    results["ratios"] = {
        f"serve/bare p50 at c{args.concurrency}, median of per-round ratios": round_ratio(
            f"c{args.concurrency}", "round_p50", "serve", "bare"),
        "serve/bare p50 at c1, median of per-round ratios": round_ratio("c1", "round_p50", "serve", "bare"),
        f"serve/bare p50 at c{args.concurrency}": round(c["serve"]["p50_ms"] / c["bare"]["p50_ms"], 3),
        "serve/bare p50 at c1": round(c1["serve"]["p50_ms"] / c1["bare"]["p50_ms"], 3),
        f"serve/bare server CPU per request at c{args.concurrency}": round(
            c["serve"]["server_cpu_ms_per_request"] / c["bare"]["server_cpu_ms_per_request"], 3),
        "serve/bare server CPU per request at c1": round(
            c1["serve"]["server_cpu_ms_per_request"] / c1["bare"]["server_cpu_ms_per_request"], 3),
    }
    for t in args.batch_timeouts:
        b, b1 = c[f"serve-batch-{t:g}ms"], c1[f"serve-batch-{t:g}ms"]
        results["ratios"][f"batching ({t:g} ms) throughput gain at c{args.concurrency}"] = round(
            b["throughput"] / c["serve"]["throughput"], 2)
        results["ratios"][f"batching ({t:g} ms) throughput gain at c{args.concurrency}, median of per-round ratios"] = \
            round_ratio(f"c{args.concurrency}", "round_rps", f"serve-batch-{t:g}ms", "serve")
        results["ratios"][f"batching ({t:g} ms) server CPU per request at c{args.concurrency}"] = round(
            b["server_cpu_ms_per_request"] / c["serve"]["server_cpu_ms_per_request"], 3)
        results["ratios"][f"batching ({t:g} ms) p50 at c1 (>1 = slower)"] = round(b1["p50_ms"] / c1["serve"]["p50_ms"], 3)
    return results


def markdown(all_results: dict, args) -> str:
    lines = []
    for kind, res in all_results["models"].items():
        ip = res["in-process"]
        lines += [f"#### model `{kind}` (predict per image, in-process: batch 1 {ip['predict_ms_per_image']['batch1']:.3f} ms, "
                  f"batch 16 {ip['predict_ms_per_image']['batch16']:.3f} ms)", "",
                  "| path | concurrency | requests | errors | req/s | p50 ms | p90 ms | p99 ms | server CPU ms/req |",
                  "|---|---|---|---|---|---|---|---|---|",
                  f"| in-process predict (no HTTP) | 1 | {ip['requests']} | 0 | {ip['throughput']} | {ip['p50_ms']} | "
                  f"{ip['p90_ms']} | {ip['p99_ms']} | – |"]
        for conc_key in (f"c{args.concurrency}", "c1"):
            for name, r in res[conc_key].items():
                label = {"bare": "bare handler (same stack)", "serve": "edgeproof serve --max-batch 1"}.get(
                    name, f"edgeproof serve --max-batch {args.max_batch} --batch-timeout-ms {name[12:-2]}")
                lines.append(f"| {label} | {conc_key[1:]} | {r['requests']} | {r['errors']} | {r['throughput']} | "
                             f"{r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['server_cpu_ms_per_request']} |")
        lines += [""] + [f"- {k}: **{v}**" for k, v in res["ratios"].items()] + [""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=10_000, help="requests per server path at --concurrency")
    ap.add_argument("--requests-c1", type=int, default=1000, help="requests per server path at concurrency 1")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds the requests are split into")
    ap.add_argument("--max-batch", type=int, default=8, help="for serve-batch (default 8, the server default)")
    ap.add_argument("--batch-timeouts", default="2,0", type=lambda t: [float(v) for v in t.split(",")],
                    help="one serve-batch path per --batch-timeout-ms value (default 2,0)")
    ap.add_argument("--limit-s", type=float, default=300, help="wall-time bound per round and path")
    ap.add_argument("--models", default="dense,conv")
    ap.add_argument("--out", default=str(HERE / "results" / "serve_load.json"))
    args = ap.parse_args()
    env_info = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
                "load_average": [round(v, 2) for v in os.getloadavg()], "date": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                               time.gmtime())}
    out = {"settings": vars(args), "environment": env_info, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.models.split(","):
            out["models"][kind] = bench_model(kind, Path(tmp), args)
            print(markdown({"models": {kind: out["models"][kind]}}, args), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}; load average at start {env_info['load_average']}, {env_info['cpus']} CPUs")
    errors = sum(r["errors"] for res in out["models"].values() for key, paths in res.items() if key.startswith("c")
                 for r in paths.values())
    if errors:
        sys.exit(f"{errors} request(s) failed; see error_kinds in {args.out}")


if __name__ == "__main__":
    main()
