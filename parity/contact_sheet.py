"""contact_sheet.png: every image whose top-1 changed, with Keras' and each artifact's prediction.

One tile per image (first MAX_TILES, in report order); the caption gives the true label, Keras' top-2 with
scores, and every artifact that flipped it with its top-1 score (backends with the same answer are merged).
A red frame is a flip that counts against the gate, an orange one a near-tie (see parity.flips).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAX_TILES = 40
COLS = 6


def _collect(report) -> list[dict]:
    """Unique flipped images, each with the artifacts (and backends) that flipped it."""
    tiles: dict[str, dict] = {}
    for r in report.rows:
        for f in getattr(r, "flipped", []) or []:
            t = tiles.setdefault(f["path"], {"flip": f, "by": {}, "counted": False})
            name = r.artifact.removeprefix("model.")
            top = f"{f['artifact_top2'][0][0]} {f['artifact_top2'][0][1]:.2f}"
            t["by"].setdefault((name, top), []).append(r.backend)
            t["counted"] |= not f["near_tie"]
    return list(tiles.values())[:MAX_TILES]


def _thumb(path: str) -> np.ndarray:
    import cv2

    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        return np.full((64, 64, 3), 200, np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def plot_contact_sheet(report, dest: Path) -> Path | None:
    """Write the sheet; None when no image changed class."""
    tiles = _collect(report)
    if not tiles:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeproof.atomic import write_png

    cols = min(COLS, len(tiles))
    rows = (len(tiles) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(max(cols, 3) * 2.6, rows * 3.3), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, t in zip(axes.flat, tiles):
        f = t["flip"]
        ax.imshow(_thumb(f["path"]))
        (a, sa), (b, sb) = f["reference_top2"]
        lines = [Path(f["path"]).name[:30], f"true: {f['true']}" if f["true"] is not None else "true: ?",
                 f"Keras: {a} {sa:.2f} | {b} {sb:.2f}"]
        lines += [f"{name}: {top}" + (f" [{','.join(bs)}]" if len(bs) < 3 else "")
                  for (name, top), bs in list(t["by"].items())[:4]]
        ax.set_title("\n".join(lines), fontsize=6.5, loc="left")
        color = "tab:red" if t["counted"] else "tab:orange"
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_color(color)
            spine.set_linewidth(3)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("on")
    total = len({f["path"] for r in report.rows for f in (getattr(r, "flipped", []) or [])})
    fig.suptitle(f"images whose top-1 changed ({total}{'; first ' + str(MAX_TILES) if total > MAX_TILES else ''})\n"
                 "red: counts against the gate; orange: near-tie (Keras margin below the artifact's noise)",
                 fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return write_png(fig, dest)
