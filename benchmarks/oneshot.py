#!/usr/bin/env python
"""One-shot cost: a fresh process that classifies ONE image, end to end (imports, load, infer, print).

Compares, on the same .tflite and image:
  edgeproof run      the `edgeproof run MODEL IMAGE` command (what a user types)
  bare litert        a hand-written ai-edge-litert script (cv2 decode + resize + invoke)
  bare litert (np)   ai-edge-litert only, random input, no image decoding (the floor)
  tf.lite            the same script through TensorFlow's tf.lite.Interpreter (what people do without
                     a light runtime)
Each is run --repeat times in a fresh process, the rounds interleaved; wall time is from spawn to exit, peak
RSS is the child's ru_maxrss from wait4. Medians and the best round are reported. Bytecode is cached as an
installed package has it (PYTHONDONTWRITEBYTECODE is dropped and PYTHONPYCACHEPREFIX points at a temporary
folder, filled by the warm-up round): a source checkout run with PYTHONDONTWRITEBYTECODE=1 would compile
edgeproof's modules in every process (about 0.1 s) and measure that instead.

    python benchmarks/oneshot.py MODEL.tflite IMAGE [--repeat 5] [--json] [-o oneshot.json]
    python benchmarks/oneshot.py MODEL.tflite IMAGE --instructions [--skip tf.lite]

--instructions counts the instructions each contender executes (valgrind's callgrind, once per contender, hash
seed fixed): on a shared machine whose load moves wall times by 2x, the count does not move with the load (run
to run it varies by about 1 %), so its ratio is the steady one; it does not see cache misses or waits.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYCACHE = os.path.join(tempfile.gettempdir(), "edgeproof-oneshot-pycache")
SCRIPT = """
import sys, numpy as np
{imports}
path, image = sys.argv[1], sys.argv[2]
it = Interpreter(model_path=path)
it.allocate_tensors()
inp, out = it.get_input_details()[0], it.get_output_details()[0]
h, w = int(inp["shape"][1]), int(inp["shape"][2])
{make_input}
if inp["dtype"] in (np.int8, np.uint8):
    s, z = inp["quantization"]
    info = np.iinfo(inp["dtype"])
    x = np.clip(np.round(x / s + z), info.min, info.max).astype(inp["dtype"])
it.set_tensor(inp["index"], x)
it.invoke()
y = it.get_tensor(out["index"])
print(int(np.argmax(y)))
"""

CV2_INPUT = """import cv2
img = cv2.cvtColor(cv2.imread(image), cv2.COLOR_BGR2RGB)
x = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)[None]"""
RANDOM_INPUT = "x = np.random.default_rng(0).integers(0, 256, (1, h, w, 3)).astype(np.float32)"


def contenders(model: str, image: str) -> dict[str, list[str]]:
    exe = shutil.which("edgeproof", path=str(Path(sys.executable).parent)) or None
    ep = [exe] if exe else [sys.executable, "-m", "edgeproof"]
    litert = "from ai_edge_litert.interpreter import Interpreter"
    tf = "import tensorflow as tf\nInterpreter = tf.lite.Interpreter"
    py = [sys.executable, "-c"]
    return {
        "edgeproof run": ep + ["run", model, image, "--top-k", "1"],
        "bare litert": py + [SCRIPT.format(imports=litert, make_input=CV2_INPUT), model, image],
        "bare litert (np)": py + [SCRIPT.format(imports=litert, make_input=RANDOM_INPUT), model, image],
        "tf.lite": py + [SCRIPT.format(imports=tf, make_input=CV2_INPUT), model, image],
    }


def run_once(cmd: list[str]) -> tuple[float, float, int, str]:
    """(wall s, peak RSS MiB, exit code, last stderr line) of one fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPYCACHEPREFIX=PYCACHE)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    err = proc.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    return wall, usage.ru_maxrss / 1024, proc.returncode, (err.strip().splitlines() or [""])[-1]


def measure(model: str, image: str, repeat: int, skip: tuple[str, ...] = ()) -> list[dict]:
    """Rounds interleaved (each round runs every contender once, in turn), so a busy moment of a shared
    machine hits all of them; the best round is the least disturbed one."""
    cmds = {k: v for k, v in contenders(model, image).items() if k not in skip}
    walls: dict[str, list[float]] = {k: [] for k in cmds}
    rss: dict[str, list[float]] = {k: [] for k in cmds}
    failure: dict[str, str | None] = dict.fromkeys(cmds)
    for cmd in cmds.values():  # warm the page cache
        run_once(cmd)
    for _ in range(repeat):
        for name, cmd in cmds.items():
            if failure[name]:
                continue
            wall, peak, rc, last = run_once(cmd)
            if rc != 0:
                failure[name] = f"exit {rc}: {last}"
                continue
            walls[name].append(wall)
            rss[name].append(peak)
    return [{"what": k, "runs": len(walls[k]), "error": failure[k],
             "wall_s_median": statistics.median(walls[k]) if walls[k] else None,
             "wall_s_min": min(walls[k]) if walls[k] else None,
             "peak_rss_mib_median": statistics.median(rss[k]) if rss[k] else None} for k in cmds]


def instructions(model: str, image: str, skip: tuple[str, ...] = ()) -> list[dict]:
    """Instructions each contender executes from spawn to exit (valgrind --tool=callgrind), one run each."""
    import re

    if shutil.which("valgrind") is None:
        raise SystemExit("oneshot: error: --instructions needs valgrind (apt-get install valgrind)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPYCACHEPREFIX=PYCACHE, PYTHONHASHSEED="0")
    rows = []
    for name, cmd in contenders(model, image).items():
        if name in skip:
            continue
        subprocess.run(cmd, env=env, capture_output=True, check=False)  # fills the bytecode cache
        r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *cmd], env=env,
                           capture_output=True, text=True, check=False)
        m = re.search(r"Collected : (\d+)", r.stderr)
        rows.append({"what": name, "instructions": int(m.group(1)) if m else None,
                     "error": None if m and r.returncode == 0 else f"exit {r.returncode}"})
    base = next((r["instructions"] for r in rows if r["what"] == "bare litert"), None)
    for r in rows:
        r["vs_bare_litert"] = round(r["instructions"] / base, 3) if base and r["instructions"] else None
    return rows


def markdown(rows: list[dict], model: str) -> str:
    base = next((r for r in rows if r["what"] == "bare litert" and r["wall_s_median"]), None)
    head = (f"One-shot cost (fresh process, one image, `{Path(model).name}`), "
            f"median of {rows[0]['runs']} runs:")
    lines = [head, "",
             "| what | wall s (median / best) | peak RSS MiB | vs bare litert (best wall / RSS) |", "|---|---|---|---|"]
    for r in rows:
        if r["error"]:
            lines.append(f"| {r['what']} | failed: {r['error']} | | |")
            continue
        vs = (f"{r['wall_s_min'] / base['wall_s_min']:.2f}× / "
              f"{r['peak_rss_mib_median'] / base['peak_rss_mib_median']:.2f}×") if base else "–"
        lines.append(f"| {r['what']} | {r['wall_s_median']:.3f} / {r['wall_s_min']:.3f} | "
                     f"{r['peak_rss_mib_median']:.0f} | {vs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a .tflite artifact")
    ap.add_argument("image", help="one image file")
    ap.add_argument("--repeat", type=int, default=5, help="fresh processes per contender (default 5)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    ap.add_argument("-o", "--out", help="also write the rows as JSON here")
    ap.add_argument("--skip", action="append", default=[], help="leave out a contender (e.g. tf.lite)")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions (valgrind) instead of timing: a ratio the machine's load does not move")
    args = ap.parse_args(argv)
    for p in (args.model, args.image):
        if not Path(p).is_file():
            print(f"oneshot: error: '{p}' does not exist", file=sys.stderr)
            return 2
    if args.repeat < 1:
        print("oneshot: error: --repeat must be >= 1", file=sys.stderr)
        return 2
    if args.instructions:
        rows = instructions(args.model, args.image, tuple(args.skip))
        if args.out:
            Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
        print(json.dumps(rows, indent=2))
        return 0
    rows = measure(args.model, args.image, args.repeat, tuple(args.skip))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    print(json.dumps(rows, indent=2) if args.json else markdown(rows, args.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
