#!/usr/bin/env python
"""What `pip install edgeproof` (no extras) brings, and what `import edgeproof.runtime` costs.

    python benchmarks/base_install.py TREE [TREE ...] [--repeat 15] [-o results.json]

TREE: a source tree of edgeproof (this checkout, or an older commit unpacked with `git archive`; a tree whose
package root is `core/`, the layout before ea14f3f, is mapped the way its pyproject's package-dir did).
For each tree:
  - the base install: the closure of its `[project] dependencies` (markers evaluated here, extras left
    out), sized from the installed distributions' RECORD files, plus edgeproof's own wheel;
  - `python -X importtime -c "import edgeproof.runtime"`: the cumulative microseconds of edgeproof.runtime,
    best of --repeat fresh processes, and the same for `import edgeproof.runtime.model` (what load() needs);
  - which edgeproof packages `import edgeproof.runtime.model` leaves in sys.modules (serve, bench and
    scaleout must not be among them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import tomllib

STAGES = ("train", "convert", "runtime", "devices", "parity")


def package_dir(tree: Path, work: Path) -> Path:
    """A folder holding an importable `edgeproof` for `tree` (links, nothing copied)."""
    if (tree / "edgeproof" / "__init__.py").exists():
        return tree
    root = work / "pkg"
    (root / "edgeproof").mkdir(parents=True)
    for item in (tree / "core").iterdir():
        os.symlink(item, root / "edgeproof" / item.name)
    for stage in STAGES:
        if (tree / stage).is_dir():
            os.symlink(tree / stage, root / "edgeproof" / stage)
    return root


def closure(requirements: list[str]) -> dict[str, int]:
    """{distribution: installed bytes} for the requirements and everything they require (no extras)."""
    from packaging.requirements import Requirement

    seen: dict[str, int] = {}
    todo = [r for r in requirements if Requirement(r).marker is None or Requirement(r).marker.evaluate()]
    while todo:
        req = Requirement(todo.pop())
        name = req.name.lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            seen[name] = -1
            continue
        seen[name] = sum((f.size or 0) for f in dist.files or [])
        for sub in dist.requires or []:
            r = Requirement(sub)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return seen


def wheel_bytes(tree: Path, work: Path) -> int | None:
    out = work / "wheel"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                        str(out), str(tree)], capture_output=True, text=True)
    wheels = list(out.glob("*.whl"))
    return wheels[0].stat().st_size if r.returncode == 0 and wheels else None


def import_us(pkg: Path, module: str, repeat: int) -> int:
    best = None
    for _ in range(repeat):
        r = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(pkg)}, cwd=pkg)
        for line in r.stderr.splitlines():
            parts = [p.strip() for p in line.split("|")]
            if len(parts) == 3 and parts[2] == module:
                us = int(parts[1])
                best = us if best is None else min(best, us)
    return best or -1


def loaded_packages(pkg: Path) -> list[str]:
    code = ("import sys, edgeproof.runtime.model; print(sorted({m.split('.')[1] for m in sys.modules "
            "if m.startswith('edgeproof.') and m.count('.') >= 1}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(pkg)}, cwd=pkg)
    return json.loads(r.stdout.strip().replace("'", '"')) if r.returncode == 0 else [f"failed: {r.stderr[-200:]}"]


def measure(tree: Path, repeat: int) -> dict:
    deps = tomllib.loads((tree / "pyproject.toml").read_text())["project"]["dependencies"]
    sizes = closure(deps)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pkg = package_dir(tree.resolve(), work)
        return {
            "tree": str(tree),
            "dependencies": deps,
            "installed_distributions": dict(sorted(sizes.items())),
            "dependencies_mib": round(sum(v for v in sizes.values() if v > 0) / 2**20, 1),
            "edgeproof_wheel_kib": (lambda b: round(b / 1024, 1) if b else None)(wheel_bytes(tree, work)),
            "import_edgeproof_runtime_us_best": import_us(pkg, "edgeproof.runtime", repeat),
            "import_edgeproof_runtime_model_us_best": import_us(pkg, "edgeproof.runtime.model", repeat),
            "packages_loaded_by_runtime_model": loaded_packages(pkg),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", type=Path)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("-o", "--out")
    a = ap.parse_args()
    rows = [measure(t, a.repeat) for t in a.trees]
    text = json.dumps(rows, indent=2)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
