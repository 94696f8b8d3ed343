"""Does int8 parity hold for every trained model, or only for the lucky ones? (issue 22 item 3)

For each dataset (shapes at 3 epochs, as the README's quick start; textures at the demo's setting) and each
seed 0..N-1: train, `edgeproof convert RUN --to all --calib-count 200 --allow-failing` (the CLI itself, so its
held-out escalation ladder and qat rung run exactly as a user gets them), `parity` (the plain gate, no --fix),
each seed in its own process (the memory of one does not carry into the next). Per seed the parity rows and every row's probabilities are kept
in the work folder, so a changed gate can re-judge them (`--rejudge`) without training again.

    python benchmarks/fidelity_seeds.py                 # 10 seeds per dataset (CPU: about 1-2 min per seed)
    python benchmarks/fidelity_seeds.py --quick         # 3 seeds per dataset, for CI
    python benchmarks/fidelity_seeds.py --rejudge       # the saved predictions through today's gate
    python benchmarks/fidelity_seeds.py --table benchmarks/results/fidelity_seeds_before_qat.json --datasets shapes
                                                        # the README's before/after table, nothing run

Writes benchmarks/results/fidelity_seeds.json: one cell per dataset x artifact x backend,
{"dataset", "artifact", "backend", "seeds", "passed", "min_agreement", "min_snr_db", "worst_dacc_pp",
"failed_seeds"}, and prints the README's markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks" / "results" / "fidelity_seeds.json"
# The training each dataset gets: shapes as `edgeproof train --dataset shapes --epochs 3`, textures as the demo.
SETTINGS = {
    "shapes": {"epochs": 3, "img_size": 64, "per_class": None, "lr": 1e-3},
    "textures": {"epochs": 12, "img_size": 64, "per_class": 100, "lr": 3e-3},
}


def one_seed(dataset: str, seed: int, work: Path) -> dict:
    """Train, convert --to all and parity for one seed; save rows.json and probs.npz in `work`."""
    from edgeproof.parity import run_parity
    from edgeproof.stderr_filter import library_output_to
    from edgeproof.train.datasets import build_dataset
    from edgeproof.train.trainer import TrainConfig, train

    s = SETTINGS[dataset]
    t0 = time.perf_counter()
    data = build_dataset(dataset, image_size=s["img_size"], per_class=s["per_class"])
    run = work / "run"
    with library_output_to(work / "library-output.log"):
        train(TrainConfig(data_dir=data, out_dir=run, img_size=s["img_size"], epochs=s["epochs"], lr=s["lr"],
                          seed=seed), progress=False)
        t1 = time.perf_counter()
        # the CLI, not convert_run: convert_run alone skips the held-out gate, its ladder and the qat rung
        conv = subprocess.run([sys.executable, "-m", "edgeproof", "convert", str(run), "--to", "all", "--calib-count",
                               "200", "--allow-failing", "--no-progress"], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if conv.returncode != 0:
            raise RuntimeError(f"edgeproof convert exited {conv.returncode}: {conv.stderr[-800:]}")
        t2 = time.perf_counter()
        rep = run_parity(run, triage=False, fix=False, e2e=False, progress=False)
    t3 = time.perf_counter()
    rows, probs = [], {"reference": _reference(run, rep), "labels": rep.y_true}
    for r in rep.rows:
        m = r.comparison.to_dict() if r.comparison is not None else {}
        rows.append({"artifact": r.artifact, "format": r.format, "backend": r.backend, "status": r.status,
                     "reason": r.reason[:300], "agreement": m.get("top1_agreement"), "snr_db": m.get("snr_db"),
                     "delta_acc_pp": m.get("delta_acc_pp"), "failures": [f.to_dict() for f in r.failures]})
        if r.probs is not None:
            probs[f"{r.artifact}|{r.backend}"] = r.probs
    _add_convert_outcome(rows, run)
    out = {"dataset": dataset, "seed": seed, "rows": rows,
           "seconds": {"train": round(t1 - t0, 1), "convert": round(t2 - t1, 1), "parity": round(t3 - t2, 1)}}
    (work / "rows.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    np.savez_compressed(work / "probs.npz", **{k: v for k, v in probs.items() if v is not None})
    return out


def _add_convert_outcome(rows: list[dict], run: Path) -> None:
    """What convert's held-out escalation did to the file parity judged, from the run's manifest: `convert` (the
    qat rung or ladder fix taken, else the gate's status), `qat` (taken, tried: built and ranked below the
    post-training file, or -) and `convert_line` (convert's own line, with the qat rival's figures)."""
    arts = json.loads((run / "artifacts" / "manifest.json").read_text())["artifacts"]
    for row in rows:
        gate = ((arts.get(row["format"]) or {}).get("options") or {}).get("held_out_gate") or {}
        row["convert"] = gate.get("improved_by") or gate.get("fixed_by") or gate.get("status") or "not judged"
        tried = any(str(f.get("variant", "")).startswith("qat") for f in gate.get("fixes") or [])
        row["qat"] = "taken" if str(row["convert"]).startswith("qat") else "tried" if tried else "-"
        row["convert_line"] = str(gate.get("line", ""))[:600]


def _reference(run: Path, rep) -> np.ndarray:
    from edgeproof.convert.source import open_for_parity
    from edgeproof.parity import data, reference
    from edgeproof.parity.runner import Batches

    r = open_for_parity(run, run / "artifacts")
    images = data.from_run(r, "test")
    return reference.predict(reference.load_keras(r.model_path, r.head), Batches(images).get(r.preprocess))


def rejudge(work: Path) -> dict:
    """rows.json's verdicts recomputed from probs.npz with today's gate (same tolerance per format)."""
    from edgeproof.formats import FORMATS
    from edgeproof.parity.gate import compare

    saved = json.loads((work / "rows.json").read_text())
    if (work / "run" / "artifacts" / "manifest.json").is_file():  # rows saved before `qat` was recorded
        _add_convert_outcome(saved["rows"], work / "run")
    npz = np.load(work / "probs.npz")
    ref, y = npz["reference"], npz["labels"] if "labels" in npz else None
    for row in saved["rows"]:
        key = f"{row['artifact']}|{row['backend']}"
        if key not in npz or row["format"] not in FORMATS:
            continue
        c = compare(ref, npz[key], y, FORMATS[row["format"]].tolerance)
        m = c.to_dict()
        row.update(status="pass" if c.passed else "fail", agreement=m["top1_agreement"], snr_db=m["snr_db"],
                   delta_acc_pp=m["delta_acc_pp"], failures=[f.to_dict() for f in c.failures])
    return saved


def cells(results: list[dict], seeds: int) -> list[dict]:
    """One cell per dataset x artifact format x backend that produced metrics."""
    by: dict[tuple, list] = {}
    for res in results:
        for row in res["rows"]:
            if row["agreement"] is None:
                continue
            by.setdefault((res["dataset"], row["format"], row["backend"]), []).append((res["seed"], row))
    out = []
    for (dataset, fmt, backend), got in sorted(by.items()):
        failed = sorted(s for s, r in got if r["status"] != "pass")
        qat = sorted(s for s, r in got if str(r.get("convert", "")).startswith("qat"))
        tried = sorted(s for s, r in got if r.get("qat") == "tried")
        out.append({"dataset": dataset, "artifact": fmt, "backend": backend, "seeds": seeds,
                    "judged": len(got), "passed": len(got) - len(failed),
                    "min_agreement": round(min(r["agreement"] for _, r in got), 4),
                    "min_snr_db": round(min(r["snr_db"] for _, r in got), 1),
                    "worst_dacc_pp": round(min(r["delta_acc_pp"] for _, r in got), 2),
                    "failed_seeds": failed, "qat_seeds": qat, "qat_tried_seeds": tried})
    return out


def markdown(table: list[dict], quantized_only: bool = True) -> str:
    from edgeproof.formats import FORMATS

    lines = ["| dataset | artifact | backend | passed | min agreement | min SNR dB | worst Δacc pp | failed seeds "
             "| qat taken |", "|---|---|---|---|---|---|---|---|---|"]
    for c in table:
        if quantized_only and not FORMATS[c["artifact"]].quantized:
            continue
        lines.append(f"| {c['dataset']} | {c['artifact']} | {c['backend']} | {c['passed']}/{c['seeds']} | "
                     f"{c['min_agreement'] * 100:.1f} % | {c['min_snr_db']:.1f} | {c['worst_dacc_pp']:+.2f} | "
                     f"{', '.join(map(str, c['failed_seeds'])) or '-'} | "
                     f"{', '.join(map(str, c.get('qat_seeds') or [])) or '-'} |")
    return "\n".join(lines)


def before_after(before: list[dict], after: list[dict], datasets: list[str]) -> str:
    """The README's before/after table: each quantized cell of `after` next to the same cell of `before`."""
    from edgeproof.formats import FORMATS

    old = {(c["dataset"], c["artifact"], c["backend"]): c for c in before}
    lines = ["| dataset | artifact | backend | before: passed, min agreement, min SNR, failed seeds | after: passed "
             "| min agreement | min SNR dB | worst Δacc pp | failed seeds | qat taken | qat tried, not taken |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in after:
        if c["dataset"] not in datasets or not FORMATS[c["artifact"]].quantized:
            continue
        b = old.get((c["dataset"], c["artifact"], c["backend"]))
        was = (f"{b['passed']}/{b['seeds']}, {b['min_agreement'] * 100:.1f} %, {b['min_snr_db']:.1f} dB, "
               f"{', '.join(map(str, b['failed_seeds'])) or '-'}") if b else "not run"
        lines.append(f"| {c['dataset']} | {c['artifact']} | {c['backend']} | {was} | {c['passed']}/{c['seeds']} | "
                     f"{c['min_agreement'] * 100:.1f} % | {c['min_snr_db']:.1f} | {c['worst_dacc_pp']:+.2f} | "
                     f"{', '.join(map(str, c['failed_seeds'])) or '-'} | "
                     f"{', '.join(map(str, c.get('qat_seeds') or [])) or '-'} | {_seeds(c.get('qat_tried_seeds'))} |")
    return "\n".join(lines)


def _seeds(seeds: list[int] | None) -> str:
    """A seed list for the table; `n/r` where the run did not record it."""
    return "n/r" if seeds is None else ", ".join(map(str, seeds)) or "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 seeds per dataset (CI)")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--datasets", default="shapes,textures")
    ap.add_argument("--seed-list", metavar="S,S,...", help="only these seeds (the cells then count them only)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the --out file's cells of the datasets not run now (one dataset rerun)")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / ".fidelity_work"), help="per-seed runs and predictions")
    ap.add_argument("--out", default=str(RESULT))
    ap.add_argument("--rejudge", action="store_true", help="re-judge the saved predictions, train nothing")
    ap.add_argument("--table", metavar="BEFORE.json",
                    help="print the before/after table of --datasets (BEFORE.json against --out), run nothing")
    ap.add_argument("--one", nargs=2, metavar=("DATASET", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = Path(args.work)
    if args.one:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        one_seed(args.one[0], int(args.one[1]), work)
        return 0
    if args.table:
        print(before_after(json.loads(Path(args.table).read_text()), json.loads(Path(args.out).read_text()),
                           [d for d in args.datasets.split(",") if d]))
        return 0
    seeds = 3 if args.quick else args.seeds
    chosen = [int(x) for x in args.seed_list.split(",")] if args.seed_list else list(range(seeds))
    seeds = len(chosen)
    datasets = [d for d in args.datasets.split(",") if d]
    results = []
    for dataset in datasets:
        for seed in chosen:
            w = work / f"{dataset}-seed{seed}"
            if args.rejudge:
                if (w / "probs.npz").exists():
                    results.append(rejudge(w))
                continue
            w.mkdir(parents=True, exist_ok=True)
            t = time.perf_counter()
            done = subprocess.run([sys.executable, __file__, "--one", dataset, str(seed), "--work", str(w)],
                                  env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{dataset} seed {seed}: failed (exit {done.returncode}): {done.stderr[-800:]}", flush=True)
                continue
            res = json.loads((w / "rows.json").read_text())
            results.append(res)
            bad = [f"{r['format']}[{r['backend']}]" for r in res["rows"] if r["status"] == "fail"]
            print(f"{dataset} seed {seed}: {time.perf_counter() - t:.0f}s {res['seconds']}; failing: "
                  f"{', '.join(bad) or 'none'}", flush=True)
    for res in results:  # what the qat rival did, in convert's words (one line per format it was built for)
        said = {r["format"]: r["convert_line"] for r in res["rows"] if r.get("qat", "-") != "-"}
        for fmt, line in sorted(said.items()):
            print(f"{res['dataset']} seed {res['seed']} {fmt}: {line}", flush=True)
    table = cells(results, seeds)
    if args.merge and Path(args.out).is_file():
        table = [c for c in json.loads(Path(args.out).read_text()) if c["dataset"] not in datasets] + table
    Path(args.out).write_text(json.dumps(table, indent=1) + "\n")
    print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
