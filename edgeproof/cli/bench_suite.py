"""The standard benchmark suite's inputs: the embedded real-photo dataset's model and all its artifacts.

`edgeproof bench --suite` benchmarks a folder of artifacts. Given none, it builds the standard one
once (dataset -> train -> convert every format) in the cache and reuses it afterwards; that step
needs `edgeproof[train]` (TensorFlow), the benchmark itself does not.
"""

from __future__ import annotations

from pathlib import Path

from edgeproof.errors import UsageError

# The standard suite: a MobileNetV2-style net (the kind of model people ship to edge CPUs) on the
# embedded real-photo 'textures' dataset. Changing these changes the cache folder name.
SUITE_DATASET = "textures"
SUITE_MODEL = "mobilenet_v2_tiny"
SUITE_IMG_SIZE = 96
SUITE_EPOCHS = 8
# 2: the dataset is built at SUITE_IMG_SIZE (version 1 trained at 96 px on 64 px crops, upscaled).
SUITE_VERSION = 2


def suite_root() -> Path:
    from edgeproof.paths import cache_dir

    return cache_dir("bench-suite") / f"{SUITE_DATASET}-{SUITE_MODEL}-{SUITE_IMG_SIZE}px-v{SUITE_VERSION}"


def _artifacts_ok(folder: Path) -> bool:
    return (folder / "manifest.json").is_file() and any(folder.glob("model.*.tflite"))


def prepare_suite(given: str | None = None, progress_enabled: bool = True) -> dict:
    """{"artifacts": folder, "keras": model.keras or None, "source": test-image folder or None}.

    ``given``: an artifacts folder (used as is) or a run folder (its artifacts are made next to it).
    """
    from edgeproof.cli.console import info

    if given:
        p = Path(given)
        if not p.is_dir():
            raise UsageError(f"--suite takes an artifacts folder or a run folder; '{given}' is not a folder")
        if _artifacts_ok(p) or any(p.glob("*.onnx")) or any(p.glob("*.tflite")):
            return {"artifacts": p, "keras": _keras_from_manifest(p), "source": _test_folder(p)}
        if (p / "model.keras").is_file():
            return _convert(p, p / "artifacts", progress_enabled)
        raise UsageError(f"'{given}' holds neither .tflite/.onnx artifacts nor a model.keras run")
    root = suite_root()
    arts, run = root / "artifacts", root / "run"
    if _artifacts_ok(arts) and (run / "model.keras").is_file():
        info(f"suite: reusing {arts} (delete {root} to rebuild)")
        return {"artifacts": arts, "keras": run / "model.keras", "source": _test_folder(arts, run)}
    from edgeproof.errors import require

    require("tensorflow", "train", "building the benchmark suite's model (or pass an artifacts folder)")
    from edgeproof.cli.console import progress_bars
    from edgeproof.train.datasets import build_dataset
    from edgeproof.train.trainer import TrainConfig, train

    info(f"suite: building the '{SUITE_DATASET}' dataset and training {SUITE_MODEL} at {SUITE_IMG_SIZE}px "
         f"({SUITE_EPOCHS} epochs) into {root}")
    # crops at the model's input size (a separate cached dataset), so no image is upscaled
    data = build_dataset(SUITE_DATASET, image_size=SUITE_IMG_SIZE)
    if not (run / "model.keras").is_file():
        train(TrainConfig(data_dir=data, out_dir=run, model=SUITE_MODEL, img_size=SUITE_IMG_SIZE,
                          epochs=SUITE_EPOCHS, seed=0), progress=progress_bars(progress_enabled))
    return _convert(run, arts, progress_enabled)


def _convert(run: Path, arts: Path, progress_enabled: bool) -> dict:
    from edgeproof.cli.console import info, progress_bars, warn
    from edgeproof.convert import convert_run

    info(f"suite: converting {run} to every format in {arts}")
    manifest = convert_run(run, arts, formats="all", progress=progress_bars(progress_enabled))
    for a in manifest.artifacts:
        if a.status != "ok":
            warn(f"suite: {a.format} could not be made ({a.error}); it is left out of the suite")
    return {"artifacts": arts, "keras": run / "model.keras", "source": _test_folder(arts, run)}


def _keras_from_manifest(arts: Path) -> Path | None:
    from edgeproof import user_files

    try:
        src = user_files.read_json(arts / "manifest.json", user_files.JSON_REPORT)
    except UsageError:
        return None
    src = src.get("source") if isinstance(src, dict) else None
    if not src:
        return None
    p = Path(src)
    p = p if p.suffix == ".keras" else p / "model.keras"
    return p if p.is_file() else None


def _test_folder(arts: Path, run: Path | None = None) -> str | None:
    """The run's test split folder (real images for the end-to-end figures), when it can be found."""
    from edgeproof import user_files

    run = run or (_keras_from_manifest(arts) or Path("/nonexistent")).parent
    try:
        data = user_files.read_json(run / "split.json", user_files.SPLIT)
    except UsageError:
        return None
    root = data.get("data_root") if isinstance(data, dict) else None
    if root and (Path(root) / "test").is_dir():
        return str(Path(root) / "test")
    return None
