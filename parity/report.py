"""Parity report outputs: table cells, parity.json, parity.md, PNG plots (matplotlib imported lazily).

The terminal table is drawn by the CLI (edgeproof/cli/parity_table.py) from `COLUMNS` and `row_cells`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeproof.atomic import write_json, write_png, write_text
from edgeproof.parity.significance import ALPHA
from edgeproof.tables import markdown_table

COLUMNS = ["artifact", "backend", "status", "size", "top-1 acc", "Δacc pp", "Δacc 95% CI", "loss p", "top-1 agree",
           "top-5 agree", "max|Δ|", "mean|Δ|", "cosine", "SNR dB", "p50 ms", "note"]


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def _num(v, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def row_cells(r) -> list[str]:
    cells = [r.artifact, r.backend, r.status.upper() if r.status in ("fail", "error") else r.status,
             _size(r.size_bytes)]
    c = r.comparison
    reason = r.reason
    if c is not None and c.flips is not None and c.flips.count:
        ties = f"{c.flips.near_ties} near-tie" if c.flips.threshold is not None else "strict"
        reason = f"{c.flips.count} flipped ({ties})" + (f"; {reason}" if reason else "")
    note = (reason[:110] + "…") if len(reason) > 110 else reason
    if c is None:
        return cells + [""] * (len(COLUMNS) - len(cells) - 1) + [note]
    t, k, test = c.tensor, c.task, c.accuracy_test
    snr = "inf" if t.snr_db == float("inf") else f"{t.snr_db:.1f}"
    lo, hi = test.interval_pp() if test is not None else (0.0, 0.0)
    return cells + [
        "" if k.accuracy is None else f"{k.accuracy:.1%}",
        "" if k.delta_acc_pp is None else f"{k.delta_acc_pp:+.2f}",
        "" if test is None else f"{lo:+.1f}…{hi:+.1f}",
        "" if test is None else f"{test.p_value:.2g}",
        f"{k.top1_agree_count}/{k.n}", f"{k.top5_agree_count}/{k.n} (k={k.top5_k})",
        f"{t.max_abs:.2e}", f"{t.mean_abs:.2e}", f"{t.cosine:.6f}", snr, _num(r.latency_p50_ms, ".3f"), note,
    ]


def near_tie_lines(report) -> list[str]:
    """One line per passing row whose flips were all excused as near-ties (what --strict-ties would change)."""
    out = []
    for r in report.rows:
        c = r.comparison
        if c is None or c.flips is None or not c.flips.near_ties or r.status != "pass":
            continue
        k = c.task
        out.append(f"{r.artifact} [{r.backend}]: passes with {k.top1_agree_count}/{k.n} top-1 agreement: "
                   f"{c.flips.near_ties} of its {c.flips.count} flip(s) are near-ties (Keras margin < "
                   f"{c.flips.threshold:.3g}); --strict-ties counts them")
    return out


def failure_lines(report) -> list[str]:
    return [f.line() for f in report.failures]


def markdown(report) -> str:
    ref = report.reference
    ref_acc = "n/a" if ref["accuracy"] is None else f"{ref['accuracy']:.2%}"
    lines = [f"# Parity report: {'PASS' if report.passed else 'FAIL'}", "",
             f"- run: `{report.run_dir}`", f"- artifacts: `{report.artifacts_dir}`",
             f"- images: {report.images_source}",
             (f"- Keras reference: top-1 {ref_acc} "
             f"({ref['correct']}/{ref['n']}), p50 {ref['latency_p50_ms']:.2f} ms/image"),
             ""]
    if report.n_images < 100:
        lines += [(f"> Only {report.n_images} images: one image is {100 / report.n_images:.2f} pp of accuracy, and "
                  f"an agreement limit of 99 % means {report.n_images}/{report.n_images} (zero disagreements). "
                  "Counts are shown next to fractions; judge them as counts."), ""]
    lines += ["## Results", "", markdown_table(COLUMNS, [row_cells(r) for r in report.rows]), ""]
    lines += [("Status: pass/fail judged by the format's tolerance (formats.py, or the flags given); "
              "*error* = a backend listed for the format cannot load/run it (a failure); *unsupported* = a "
              "backend not listed for the format cannot load it (not a failure); *skipped* = not installed."), "",
              ("Accuracy is judged one-sided (a gain never fails) against the size of the test set: *Δacc 95% CI* "
               "and *loss p* are the exact paired test on the images where exactly one of Keras and the artifact is "
               "right (McNemar, binomial on lost vs gained); a loss over the format's limit fails only when p < "
               f"{ALPHA:g}. The agreement and SNR floors hold whatever the labels say."), ""]
    if report.failures:
        lines += ["## Failures", ""] + [f"- {ln}" for ln in failure_lines(report)] + [""]
    lines += flips_markdown(report)
    if report.e2e and report.e2e["preprocessing"].get("error"):
        lines += ["## End-to-end: preprocessing drift vs conversion drift", "",
                  f"- not measured: {report.e2e['preprocessing']['error']}", ""]
    elif report.e2e:
        pre = report.e2e["preprocessing"]
        lines += ["## End-to-end: preprocessing drift vs conversion drift", "",
                  f"- {pre['what']}",
                  (f"- pixels: max |Δ| {pre['pixels_max_abs']:.2f}, mean |Δ| {pre['pixels_mean_abs']:.3f} "
                  f"(0..255 scale), {pre['pixels_identical_fraction']:.1%} identical"),
                  (f"- probabilities: max |Δ| {_fmt(pre['probs_max_abs'])}, mean |Δ| {_fmt(pre['probs_mean_abs'])}, "
                  f"SNR {_fmt_db(pre['probs_snr_db'])} dB, top-1 changed {pre['top1_changed']}/{pre['n']}"),
                  f"- accuracy: TF decode {_pct(pre['accuracy_tf_decode'])} vs OpenCV {_pct(pre['accuracy_opencv'])}"
                  + (f"; {pre['skipped']} file(s) TF cannot decode left out" if pre.get("skipped") else ""),
                  f"- **{report.e2e['verdict']}**", ""]
        if pre.get("end_to_end"):
            lines += [("End-to-end per artifact (artifact on the runtime's OpenCV path vs Keras on the training "
                      "pipeline's TF path — what deployment changes in total):"), "",
                      markdown_table(["artifact", "backend", "max|Δ|", "mean|Δ|", "top-1 changed"],
                                [[e["artifact"], e["backend"], f"{e['max_abs']:.2e}", f"{e['mean_abs']:.2e}",
                                  f"{e['top1_changed']}/{e['n']}"] for e in pre["end_to_end"]]), ""]
    if report.e2e and report.e2e.get("page_preprocessing"):
        from edgeproof.parity.browser_pre import summary

        lines += ["## In the browser: the page's own preprocessing", "", f"- {summary(report.e2e['page_preprocessing'])}", ""]
    for t in report.triage:
        lines += [f"## Quantization triage: {t.artifact}", "", f"Tool: {t.tool}."]
        if t.error:
            lines += [f"Triage could not run: {t.error}", ""]
            continue
        lines += [f"Worst layer(s): **{', '.join(le.label() for le in t.worst)}**", ""]
        lines += [markdown_table(["layer", "tensor", "op", "rmse/scale", "channel SNR dB", "suspect"],
                            [[le.layer or "", le.tensor[:60], le.op, _num(le.rmse_scale, ".3f"),
                              _num(le.channel_snr_db, ".1f"), le.reason or "no"] for le in t.layers[:12]]), ""]
        lines += [("rmse/scale ≈ 0.289 is pure rounding (healthy), > 0.7 suspect; a median channel SNR under "
                  "10 dB means outlier channels set the scale and the other channels lost their resolution."), ""]
        for n in t.notes:
            lines.append(f"- note: {n}")
        if t.fixes:
            before = t.before
            rows = ([["before (original)"] + row_cells(before)[2:]] if before else []) + \
                   [[f"after: {getattr(r, 'variant', '')}"] + row_cells(r)[2:] for r in t.fixes]
            lines += ["", ("Fixes, in order of cost, stopping at the first that passes (re-exported into "
                           "REPORT_DIR/fixed/, judged the same way):"), "",
                      markdown_table(["variant"] + COLUMNS[2:], rows), ""]
            lines += [f"- {getattr(r, 'variant', '')}: `{r.path}`" + _fix_facts(r) + (f" — {r.reason}" if r.reason else "")
                      for r in t.fixes] + [""]
    for p in getattr(report, "promoted", []) or []:
        sbs = p.get("side_by_side_ms")
        speed = f", p50 {sbs['after']:.3g} ms vs {sbs['before']:.3g} ms for the file it replaces" if sbs else ""
        instead = f" in place of `{p['replaces']}` (a {p['format']} file, named as one)" \
            if p.get("format") and p.get("format") != p.get("replaces") else ""
        fidelity = f", agreement {p['agreement']}, SNR {p['snr_db']} dB" if p.get("agreement") else ""
        lines += [f"**Promoted** `{p['variant']}` to `{p['path']}`{instead}{fidelity}{speed} (recipe in manifest.json; the "
                  f"replaced file is kept as `{p['replaced']}`); judged again: "
                  f"{'passes' if p['passes'] else 'still fails'}." + (f" {p['note']}." if p.get("note") else ""), ""]
    return "\n".join(lines) + "\n"


def _fix_facts(r) -> str:
    """' (a tflite-int16x8 file; 66.0x slower side by side; rejected: ...)' for a fix of the ladder."""
    facts = []
    real = getattr(r, "real_format", None)
    if real and real != r.format:
        facts.append(f"a {real} file")
    elif real == "":
        facts.append("no format in the table describes it: never promoted")
    if getattr(r, "latency_ratio", None) is not None:
        facts.append(f"{r.latency_ratio:.1f}x the p50 of the file it would replace")
    if getattr(r, "rejected", None):
        facts.append(f"**rejected**: {r.rejected}")
    return f" ({'; '.join(facts)})" if facts else ""


def flips_markdown(report) -> list[str]:
    """'Images whose top-1 changed': one table per artifact × backend (an identical list is not repeated)."""
    judged = [r for r in report.rows if r.comparison is not None and r.comparison.flips is not None]
    if not any(r.flipped for r in judged):
        return []
    lines = ["## Images whose top-1 changed", "",
             ("A flip is a *near-tie* when Keras' own top-1 − top-2 margin is below the artifact's measured noise "
              "on that margin (its p95 over all images, capped by the format's `near_tie_max_margin`): near-ties "
              "count as agreement for the top-1 limit, never for Δaccuracy; `--strict-ties` counts every flip. "
              "Pictured in `contact_sheet.png`."), ""]
    seen: dict[tuple, str] = {}
    for r in judged:
        if not r.flipped:
            continue
        fs = r.comparison.flips
        key = (r.artifact, tuple((f["path"], f["artifact_top2"][0][0]) for f in r.flipped))
        head = f"### {r.artifact} [{r.backend}]: {fs.count} flipped, {fs.near_ties} near-tie(s)"
        thr = "strict rule (no near-ties)" if fs.threshold is None else f"near-tie threshold {fs.threshold:.3g}"
        if key in seen:
            lines += [head, "", f"The same images and answers as [{seen[key]}].", ""]
            continue
        seen[key] = r.backend
        rows = [[f"`{f['path']}`", f["true"] if f["true"] is not None else "?",
                 f"{f['reference_top2'][0][0]} {f['reference_top2'][0][1]:.3f}, "
                 f"{f['reference_top2'][1][0]} {f['reference_top2'][1][1]:.3f}",
                 f"{f['reference_margin']:.3f}",
                 f"{f['artifact_top2'][0][0]} {f['artifact_top2'][0][1]:.3f}, "
                 f"{f['artifact_top2'][1][0]} {f['artifact_top2'][1][1]:.3f}",
                 "yes" if f["near_tie"] else "no"] for f in r.flipped]
        lines += [head, "", f"Measured margin noise {fs.noise:.3g} (p95 |Δmargin|), {thr}.", "",
                  markdown_table(["image", "true", "Keras top-2", "Keras margin", "artifact top-2", "near-tie"], rows),
                  ""]
    return lines


def _fmt(v) -> str:
    return v if isinstance(v, str) else f"{v:.3g}"


def _fmt_db(v) -> str:
    return v if isinstance(v, str) else f"{v:.1f}"


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def plot_acc_latency(report, dest: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in report.rows if r.comparison is not None and r.latency_p50_ms is not None]
    if not pts:
        return None
    use_acc = report.labelled
    fig, ax = plt.subplots(figsize=(10, 5.5))
    sizes = np.array([r.size_bytes for r in pts], float)
    s = 40 + 400 * sizes / max(sizes.max(), 1)
    ys = [(r.comparison.task.accuracy if use_acc else r.comparison.task.top1_agreement) * 100 for r in pts]
    colors = ["tab:green" if r.status == "pass" else "tab:red" for r in pts]
    ax.scatter([r.latency_p50_ms for r in pts], ys, s=s, c=colors, alpha=0.55, edgecolors="k")
    # numbered points + a key beside the plot: equal accuracies would make text labels collide
    for i, (r, yv) in enumerate(zip(pts, ys), 1):
        ax.annotate(str(i), (r.latency_p50_ms, yv), fontsize=7, ha="center", va="center")
    key = "\n".join(f"{i:2d} {r.artifact.removeprefix('model.')} [{r.backend}] {_size(r.size_bytes)}"
                    for i, r in enumerate(pts, 1))
    fig.text(0.70, 0.5, key, fontsize=7, family="monospace", va="center")
    fig.subplots_adjust(right=0.68)
    ref = report.reference
    if use_acc and ref.get("latency_p50_ms"):
        ax.axhline(ref["accuracy"] * 100, color="gray", ls="--", lw=1, label=f"Keras {ref['accuracy']:.1%}")
        # outside the axes: inside, it hid the markers of failing (low-accuracy, slow) artifacts
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_xscale("log")
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    # under a decade of latencies there is no major tick: label the minor ones instead
    spread = max(r.latency_p50_ms for r in pts) / max(min(r.latency_p50_ms for r in pts), 1e-9)
    ax.xaxis.set_minor_formatter(FormatStrFormatter("%g") if spread < 10 else NullFormatter())
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_ylim(max(0.0, min(ys) - 5.0), 100.5)  # accuracy never exceeds 100 %
    ax.set_xlabel("p50 latency per image (ms, log)")
    ax.set_ylabel("top-1 accuracy (%)" if use_acc else "top-1 agreement with Keras (%)")
    ax.set_title("accuracy vs latency (marker area ∝ file size; red = fails its tolerance)", fontsize=9)
    return write_png(fig, dest)


def worst_row(report):
    rows = [r for r in report.rows if r.comparison is not None]
    if not rows:
        return None
    return min(rows, key=lambda r: (r.comparison.task.top1_agreement, -r.comparison.tensor.max_abs))


def plot_confusion(report, dest: Path) -> Path | None:
    """Confusion matrix of the worst artifact (the training report's own plot)."""
    from edgeproof.train.report import confusion_matrix
    from edgeproof.train.report import plot_confusion as plot_cm

    r = worst_row(report)
    if r is None or r.preds is None or report.y_true is None:
        return None
    cm = confusion_matrix(report.y_true, r.preds, len(report.labels))
    k = r.comparison.task
    return plot_cm(dest, cm.tolist(), report.labels,
                   f"worst: {r.artifact} [{r.backend}] — agreement {k.top1_agree_count}/{k.n}")


def write_all(report, out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    files = {"json": out_dir / "parity.json", "markdown": out_dir / "parity.md"}
    try:
        from edgeproof.parity.contact_sheet import plot_contact_sheet

        for name, fn in (("accuracy_latency_png", plot_acc_latency), ("confusion_png", plot_confusion),
                         ("contact_sheet_png", plot_contact_sheet)):
            p = fn(report, out_dir / f"{name.replace('_png', '')}.png")
            if p is not None:
                files[name] = p
    except ImportError:  # matplotlib is in the train extra; the text reports do not need it
        pass
    report.files = files
    write_text(files["markdown"], markdown(report))
    write_json(files["json"], report.to_dict())
    return files
