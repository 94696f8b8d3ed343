"""`edgeproof bench --suite` inputs: the standard model is trained on crops of its own input size."""

from __future__ import annotations

from pathlib import Path

from edgeproof.cli import bench_suite


def test_suite_builds_its_dataset_at_the_model_input_size(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEPROOF_CACHE", str(tmp_path))
    calls: dict = {}

    def fake_build(name, root=None, image_size=None, per_class=None, seed=0):
        calls["dataset"] = (name, image_size)
        return tmp_path / "data"

    def fake_train(cfg, progress=True):
        calls["train_img_size"] = cfg.img_size
        (Path(cfg.out_dir)).mkdir(parents=True)
        (Path(cfg.out_dir) / "model.keras").write_bytes(b"k")
        return Path(cfg.out_dir)

    class Manifest:
        artifacts: list = []

    def fake_convert(run, out, formats="all", progress=False):
        calls["convert"] = (Path(run), Path(out), formats)
        return Manifest()

    import edgeproof.convert
    import edgeproof.errors
    import edgeproof.train.datasets
    import edgeproof.train.trainer

    monkeypatch.setattr(edgeproof.errors, "require", lambda *a, **k: None)
    monkeypatch.setattr(edgeproof.train.datasets, "build_dataset", fake_build)
    monkeypatch.setattr(edgeproof.train.trainer, "train", fake_train)
    monkeypatch.setattr(edgeproof.convert, "convert_run", fake_convert)
    got = bench_suite.prepare_suite(None, progress_enabled=False)
    assert calls["dataset"] == (bench_suite.SUITE_DATASET, bench_suite.SUITE_IMG_SIZE)
    assert calls["train_img_size"] == bench_suite.SUITE_IMG_SIZE
    root = bench_suite.suite_root()
    assert root.parent == tmp_path / "bench-suite" and root.name.endswith(f"-v{bench_suite.SUITE_VERSION}")
    assert got["artifacts"] == root / "artifacts" and calls["convert"][2] == "all"
