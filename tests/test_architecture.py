"""The layers of docs/architecture.md hold: import-linter's contracts pass on the tree, fail on a tree with an
upward import, and the graph they are checked on sees every module file of the repository."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["train", "convert", "runtime", "parity", "devices"]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([*LINT, "--config", str(cwd / "pyproject.toml"), "--no-cache"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _copy_tree(dest: Path) -> Path:
    """The package as the repository lays it out (edgeproof/ with its stage links) and pyproject.toml."""
    shutil.copytree(ROOT / "edgeproof", dest / "edgeproof", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for stage in STAGES:
        shutil.copytree(ROOT / stage, dest / stage, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return dest


def test_the_contracts_hold_on_this_tree():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "BROKEN" not in r.stdout and r.stdout.count("KEPT") >= 2


@pytest.mark.parametrize("module, upward", [
    ("runtime/model.py", "edgeproof.parity.gate"),        # the runtime reaching into parity
    ("convert/verify.py", "edgeproof.parity.reference"),  # the upward import issue 23 removed
    ("runtime/preprocess.py", "edgeproof.serve.config"),  # the device runtime importing the server
    ("edgeproof/errors.py", "edgeproof.runtime.model"),   # the package root importing a layer above it
])
def test_an_upward_import_breaks_the_contract(tmp_path, module, upward):
    tree = _copy_tree(tmp_path)
    f = tree / module
    f.write_text(f.read_text() + f"\nimport {upward}  # noqa\n")
    r = _lint(tree)
    assert r.returncode != 0
    assert "BROKEN" in r.stdout
    importer = "edgeproof." + module.removesuffix(".py").replace("/", ".").removeprefix("edgeproof.")
    assert f"{importer} -> {upward}" in r.stdout


def test_a_tensorflow_import_in_the_runtime_breaks_the_contract(tmp_path):
    tree = _copy_tree(tmp_path)
    f = tree / "runtime" / "sources.py"
    f.write_text(f.read_text() + "\nimport tensorflow  # noqa\n")
    r = _lint(tree)
    assert r.returncode != 0 and "edgeproof.runtime.sources -> tensorflow" in r.stdout


def test_the_import_graph_sees_every_module_file():
    import grimp

    graph = grimp.build_graph("edgeproof", cache_dir=None)
    expected = set()
    for folder, prefix in [(ROOT / "edgeproof", "edgeproof"), *[(ROOT / s, f"edgeproof.{s}") for s in STAGES]]:
        for py in folder.rglob("*.py"):
            rel = py.relative_to(folder).with_suffix("")
            if any(part in STAGES for part in rel.parts[:1]) and folder.name == "edgeproof":
                continue  # the links to the stages: counted under the stage itself
            parts = [p for p in rel.parts if p != "__init__"]
            expected.add(".".join([prefix, *parts]))
    missing = sorted(expected - set(graph.modules))
    assert not missing, missing
    # and the graph has the edges between folders that a reader would draw
    assert graph.direct_import_exists(importer="edgeproof.parity.runner", imported="edgeproof.runtime.model") or \
        graph.chain_exists(importer="edgeproof.parity.runner", imported="edgeproof.runtime.model")


def test_each_stage_folder_is_linked_into_the_package_root():
    for stage in STAGES:
        link = ROOT / "edgeproof" / stage
        assert link.is_symlink() and link.resolve() == (ROOT / stage).resolve(), stage
