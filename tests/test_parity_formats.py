"""Parity against the full Keras model: every format in the table meets its tolerance.

The conftest `tiny_run` is trained for 4 epochs and sits near chance (its outputs are almost
uniform, so a one-ulp change flips a top-1); a tolerance test on it would test noise. This module
trains the same tiny_cnn on the same `shapes_dir` for 12 epochs (~96 % test accuracy) and converts
it to every format once; each format is then judged on every installed backend listed for it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeproof.formats import FORMATS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_parity(shapes_dir, tmp_path_factory):
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    from edgeproof.convert import convert_run
    from edgeproof.parity import run_parity
    from edgeproof.train.trainer import TrainConfig, train

    base = tmp_path_factory.mktemp("parity-formats")
    run = train(TrainConfig(data_dir=shapes_dir, out_dir=base / "run", model="tiny_cnn", img_size=32,
                            epochs=12, batch_size=32, lr=3e-3, seed=0), progress=False)
    manifest = convert_run(run, base / "artifacts", formats=list(FORMATS), calib_count=60)
    assert all(a.status == "ok" for a in manifest.artifacts), [a.error for a in manifest.artifacts]
    report = run_parity(run, artifacts_dir=base / "artifacts", out_dir=base / "report", progress=False)
    return report


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=list(FORMATS))
def test_format_meets_its_tolerance_on_every_listed_backend(trained_parity, fmt):
    rows = [r for r in trained_parity.rows if r.format == fmt.name]
    listed = [r for r in rows if r.backend in fmt.backends and r.status != "skipped"]
    assert listed, f"no installed backend of {fmt.backends} ran {fmt.name}"
    assert fmt.backends[0] in {r.backend for r in listed}  # the preferred backend always ran
    for r in listed:
        assert r.comparison is not None, r.reason
        assert r.comparison.tolerance == fmt.tolerance
        assert r.status == "pass", [f.line() for f in r.failures]
        assert r.latency_p50_ms is not None and r.latency_p50_ms > 0
    for r in rows:  # an unlisted backend may be "unsupported", never an unexplained failure
        assert r.status in ("pass", "unsupported", "skipped"), (r.backend, r.status, r.reason)


def test_report_files_and_end_to_end_section(trained_parity):
    rep = trained_parity
    assert rep.passed
    for key in ("json", "markdown", "accuracy_latency_png", "confusion_png"):
        assert Path(rep.files[key]).stat().st_size > 0
    assert rep.e2e["dominant"] in ("preprocessing", "conversion")
    assert "dominates" in rep.e2e["verdict"]
    md = Path(rep.files["markdown"]).read_text()
    assert "# Parity report: PASS" in md and "preprocessing drift" in md
