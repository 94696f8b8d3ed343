"""Shared fixtures: a tiny dataset, a tiny trained run and its converted artifacts (session-scoped).

The heavy fixtures import TensorFlow lazily and skip cleanly when the train extra is missing.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("EDGEPROOF_CACHE", str(Path(__file__).parent / ".cache"))

TINY_SIZE = 32


def _needs_tf():
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """A small procedural 'shapes' image folder (3 classes, with train/val/test splits)."""
    from edgeproof.train.datasets import build_dataset

    root = tmp_path_factory.mktemp("data")
    return build_dataset("shapes", root=root, image_size=TINY_SIZE, per_class=60, seed=0)


@pytest.fixture(scope="session")
def tiny_run(shapes_dir, tmp_path_factory) -> Path:
    """A tiny_cnn trained for a few epochs on `shapes_dir`: a complete run folder."""
    _needs_tf()
    from edgeproof.train.trainer import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    cfg = TrainConfig(data_dir=shapes_dir, out_dir=out, model="tiny_cnn", img_size=TINY_SIZE,
                      epochs=4, batch_size=32, lr=3e-3, seed=0)
    return train(cfg)


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_run, tmp_path_factory) -> Path:
    """Every format in the table converted from `tiny_run`; returns the artifacts folder."""
    _needs_tf()
    from edgeproof.convert import convert_run
    from edgeproof.formats import FORMATS

    out = tmp_path_factory.mktemp("artifacts")
    manifest = convert_run(tiny_run, out, formats=list(FORMATS), calib_count=60)
    failed = [a for a in manifest.artifacts if a.status != "ok"]
    assert not failed, failed
    return out


@pytest.fixture
def python_sigint_handler():
    """Python's own KeyboardInterrupt handler on SIGINT for this test, whatever the suite inherited.

    Started from a background job of a non-interactive shell (`make test &`, nohup, a service), SIGINT is
    SIG_IGN and Python installs no handler, so `_thread.interrupt_main(SIGINT)` would do nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _LastResort(logging.Handler):
    """What a plain process prints for a library warning while logging is unconfigured (Python's
    logging.lastResort: the message alone, on stderr). Under pytest the root logger holds pytest's
    capture handler, so lastResort never runs; this puts the warning where capsys/capfd see it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        sys.stderr.write(self.format(record) + "\n")


@pytest.fixture(autouse=True)
def _library_warnings_on_stderr():
    handler = _LastResort()
    logging.getLogger().addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger().removeHandler(handler)
