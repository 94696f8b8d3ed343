"""Multi-worker training (issue 16): topology parsing, exact data sharding, phases, and real 2-worker runs
on 127.0.0.1 compared with the 1-worker run, a worker killed mid-run, --resume afterwards, and nothing
(process, port) left behind."""

from __future__ import annotations

import csv
import json
import os
import socket
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from edgeproof.cli.main import run_cli
from edgeproof.errors import UsageError
from edgeproof.train.distributed import Topology, resolve_topology

# 2 workers x B/2 vs 1 worker x B, same seed: the same batches and augmentations reach the model (tested
# exactly below); what differs is float rounding (all-reduce sums vs one sum, per-worker conv batches),
# which grows slowly over the steps. Measured on shapes/32 px, 4 epochs: |d loss| <= 0.0011,
# |d val_loss| <= 0.008, accuracies within one image. The test allows:
LOSS_TOL = 0.02  # absolute, per epoch, train and val loss
ACC_TOL_IMAGES = 2  # accuracies (per epoch and final) within this many images of the split


def _topo(cfg: dict) -> Topology:
    return resolve_topology(environ={"TF_CONFIG": json.dumps(cfg)})


def test_topology_from_tf_config_and_cluster_file(tmp_path):
    hosts = ["a:1", "b:2", "c:3"]
    t = _topo({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": 2}})
    assert (t.count, t.rank, t.is_chief, t.source) == (3, 2, False, "TF_CONFIG")
    assert t.describe()["hosts"] == hosts and t.describe()["chief"] == "a:1"
    t = _topo({"cluster": {"chief": ["c:0"], "worker": hosts}, "task": {"type": "chief", "index": 0}})
    assert (t.count, t.rank, t.is_chief) == (4, 0, True)
    t = _topo({"cluster": {"chief": ["c:0"], "worker": hosts}, "task": {"type": "worker", "index": 0}})
    assert (t.rank, t.is_chief) == (1, False)
    assert resolve_topology(environ={}) == Topology() and Topology().is_chief

    f = tmp_path / "cluster.json"
    f.write_text(json.dumps({"cluster": {"worker": hosts}}))
    t = resolve_topology(f, task_index=1, environ={})
    assert (t.rank, t.source) == (1, "--cluster")
    with pytest.raises(UsageError, match=r"no task for this process .*--task-index"):
        resolve_topology(f, environ={})
    with pytest.raises(UsageError, match=r"task worker 5 is not in the cluster \(3 worker entries\); use an index 0..2"):
        resolve_topology(f, task_index=5, environ={})
    f.write_text("{not json")
    with pytest.raises(UsageError, match="is not valid JSON"):
        resolve_topology(f, environ={})
    with pytest.raises(UsageError, match="cannot read it"):
        resolve_topology(tmp_path / "missing.json", environ={})
    with pytest.raises(UsageError, match=r"job\(s\) ps are not used"):
        _topo({"cluster": {"worker": hosts, "ps": ["p:1"]}, "task": {"type": "worker", "index": 0}})
    with pytest.raises(UsageError, match="TF_CONFIG is not valid JSON"):
        resolve_topology(environ={"TF_CONFIG": "{"})


def test_bad_multi_worker_options_are_one_line_before_any_worker_starts(shapes_dir, tmp_path, capsys,
                                                                         monkeypatch):
    base = ["train", "--data", str(shapes_dir), "--img-size", "16", "--epochs", "1", "-o", str(tmp_path / "r")]
    started = []
    monkeypatch.setattr("edgeproof.train.launch.launch_local", lambda *a, **k: started.append(a))
    cases = [
        (["--workers", "2", "--batch-size", "31"], "--batch-size 31 does not split evenly over 2 workers"),
        (["--workers", "0"], "--workers 0: use 1 or more"),
        (["--task-index", "1"], "--task-index needs --cluster FILE"),
        (["--cluster", str(tmp_path / "nope.json")], "cannot read it"),
    ]
    for extra, msg in cases:
        assert run_cli([*base, *extra]) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert run_cli([*base, "--workers", "2"]) == 2
    assert "cannot be combined with --cluster or TF_CONFIG" in capsys.readouterr().err
    assert not started and not (tmp_path / "r").exists()


_HOOK = """
    import json, os, signal, sys, time
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    if os.environ.get("HOOK") == "kill-1" and task.get("index") == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # a worker dying at start-up
    if os.environ.get("HOOK") == "kill-1" and task.get("index") == 0:
        time.sleep(120)  # the chief, busy training: the launcher must stop it
"""


def test_launcher_reaps_every_worker_and_names_the_dead_one(tmp_path, monkeypatch):
    """No TensorFlow: workers that exit, a chief that fails on its own, a worker killed while the chief runs."""
    from edgeproof.train.launch import launch_local

    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(_HOOK))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    scratch = set(Path(tempfile.gettempdir()).glob("edgeproof-workers-*"))
    ok = launch_local(["--version"], 2, lambda: "hint")
    assert ok.exit_code == 0 and ok.error is None and ok.returncodes == [0, 0]
    _nothing_left(ok)

    bad = launch_local(["train", "--data", str(tmp_path / "missing")], 2, lambda: "hint")
    assert bad.exit_code == 2 and bad.error is None  # the chief printed its own one line

    monkeypatch.setenv("HOOK", "kill-1")
    t0 = time.monotonic()
    dead = launch_local(["--version"], 2, lambda: "add --resume")
    assert time.monotonic() - t0 < 30  # the chief was stopped, not waited for
    assert dead.exit_code == 3 and dead.returncodes[1] == -9
    assert dead.error == (f"worker 1 of 2 (pid {dead.pids[1]}) died: killed by SIGKILL; stopped the other workers; "
                          "add --resume")
    _nothing_left(dead)
    assert set(Path(tempfile.gettempdir()).glob("edgeproof-workers-*")) == scratch  # the workers' logs are gone


def test_shards_are_exactly_the_slices_of_the_one_worker_global_batches():
    """Worker k of n gets the k-th slice of every global batch, with the augmentation one worker gives it."""
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    from edgeproof.train.data import make_tf_dataset

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (70, 8, 8, 3), dtype=np.uint8)
    labels = np.arange(70) % 3
    for augment in (True, False):
        whole = [(x.numpy(), y.numpy()) for x, y in make_tf_dataset(images, labels, 12, augment=augment, seed=5)]
        assert len(whole) == 70 // 12
        for n in (2, 3, 4):
            parts = [[(x.numpy(), y.numpy()) for x, y in make_tf_dataset(images, labels, 12, augment=augment,
                                                                         seed=5, shard=(k, n))] for k in range(n)]
            assert all(len(p) == len(whole) for p in parts)
            for b, (x, y) in enumerate(whole):
                np.testing.assert_array_equal(np.concatenate([p[b][0] for p in parts]), x)
                np.testing.assert_array_equal(np.concatenate([p[b][1] for p in parts]), y)


@pytest.mark.slow
def test_phases_freeze_then_fine_tune(shapes_dir, tmp_path, monkeypatch):
    """A frozen first phase leaves the named layers' weights as initialized; the second trains them."""
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    import keras

    from edgeproof.train.loop import Phase, apply_phase
    from edgeproof.train.models import build_model
    from edgeproof.train.trainer import TrainConfig, train

    model = build_model("tiny_cnn", 16, 3)
    opt = keras.optimizers.Adam(1e-3)
    apply_phase(model, opt, Phase(1, 5e-4, trainable="fc|probs"))
    assert {layer.name for layer in model.layers if layer.trainable and layer.weights} == {"fc", "probs"}
    assert float(opt.learning_rate.numpy()) == pytest.approx(5e-4)
    apply_phase(model, opt, Phase(1, 1e-3))
    assert all(layer.trainable for layer in model.layers if layer.weights)

    with pytest.raises(UsageError, match="the phases add up to 3 epochs but epochs is 2"):
        TrainConfig(data_dir=shapes_dir, out_dir=tmp_path / "x", epochs=2,
                    phases=(Phase(1, 1e-3), Phase(2, 1e-4))).validate()

    def run(phases, name, resume=False):
        cfg = TrainConfig(data_dir=shapes_dir, out_dir=tmp_path / name, img_size=16, epochs=2, batch_size=32,
                          lr=3e-3, seed=0, patience=5, phases=phases)
        return keras.saving.load_model(train(cfg, progress=False, resume=resume) / "model.keras")

    keras.utils.set_random_seed(0)  # as train() does before building the model
    init = {w.path: w.numpy() for w in build_model("tiny_cnn", 16, 3).weights}
    # A checkpoint saved in a frozen phase resumes (its optimizer covers every variable).
    from edgeproof.train import report

    def stop(*a, **k):
        raise RuntimeError("stop before the run folder")

    monkeypatch.setattr(report, "plot_confusion", stop)
    with pytest.raises(RuntimeError, match="stop before"):
        run((Phase(2, 3e-3, trainable="fc|probs"),), "head")
    monkeypatch.undo()
    assert json.loads((tmp_path / ".head.partial" / "state.json").read_text())["epoch"] == 2
    head_only = run((Phase(2, 3e-3, trainable="fc|probs"),), "head", resume=True)
    both = run((Phase(1, 3e-3, trainable="fc|probs"), Phase(1, 3e-3)), "both")
    conv = [w for w in head_only.weights if w.path.startswith("conv1/")][0]
    np.testing.assert_array_equal(conv.numpy(), init[conv.path])  # frozen for the whole run
    head = [w for w in head_only.weights if w.path.startswith("fc/")][0]
    assert not np.array_equal(head.numpy(), init[head.path])
    conv2 = [w for w in both.weights if w.path.startswith("conv1/")][0]
    assert not np.array_equal(conv2.numpy(), init[conv2.path])  # unfrozen in phase 2


# ---------------------------------------------------------------- real 2-worker runs on localhost

SMALL = ["--img-size", "24", "--epochs", "2", "--batch-size", "32", "--lr", "0.003", "--seed", "0", "--no-progress"]
_DIE = """
    import json, os, signal
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    if task.get("index") == 1:
        from edgeproof.train import session
        _run_epoch, _n = session.run_epoch, [0]
        def run_epoch(*a, **k):
            _n[0] += 1
            if _n[0] == 2:  # worker 1 dies as epoch 2 starts; the chief committed epoch 1
                os.kill(os.getpid(), signal.SIGKILL)
            return _run_epoch(*a, **k)
        session.run_epoch = run_epoch
"""


def _history(run: Path) -> list[dict[str, float]]:
    return [{k: float(v) for k, v in row.items()} for row in csv.DictReader((run / "history.csv").open())]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture(scope="module")
def one_worker(shapes_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one") / "run"
    assert run_cli(["train", "--data", str(shapes_dir), *SMALL, "-o", str(out)]) == 0
    return out


@pytest.fixture
def launches(monkeypatch) -> list:
    """Every Launch the CLI makes (its workers' pids and ports), to check nothing is left behind."""
    from edgeproof.train import launch

    seen, real = [], launch.launch_local

    def spy(*a, **k):
        seen.append(real(*a, **k))
        return seen[-1]

    monkeypatch.setattr(launch, "launch_local", spy)
    return seen


def _nothing_left(result) -> None:
    assert len(result.pids) == 2 and len(result.ports) == 2
    assert all(_gone(pid) for pid in result.pids), result.pids
    assert all(_port_free(port) for port in result.ports), result.ports


@pytest.mark.slow
def test_two_workers_match_one_worker_and_leave_nothing_behind(one_worker, shapes_dir, tmp_path, launches):
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    out = tmp_path / "two"
    t0 = time.monotonic()
    assert run_cli(["train", "--data", str(shapes_dir), *SMALL, "--workers", "2", "-o", str(out)]) == 0
    assert time.monotonic() - t0 < 240  # start-up, 2 epochs and teardown are bounded
    _nothing_left(launches[-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["two"]  # no checkpoint, no temp folder

    one, two = (json.loads((p / "metrics.json").read_text()) for p in (one_worker, out))
    assert two["distributed"]["workers"] == 2 and one["distributed"]["workers"] == 1
    assert two["distributed"]["strategy"] == "MultiWorkerMirroredStrategy"
    assert two["distributed"]["global_batch"] == 32 and two["distributed"]["per_worker_batch"] == 16
    assert len(two["distributed"]["hosts"]) == 2 and all(h.startswith("127.0.0.1:") for h in two["distributed"]["hosts"])
    h1, h2 = _history(one_worker), _history(out)
    assert len(h1) == len(h2) == 2
    n_train, n_val = one["counts"]["train"], one["counts"]["val"]
    for a, b in zip(h1, h2, strict=True):
        assert abs(a["loss"] - b["loss"]) <= LOSS_TOL and abs(a["val_loss"] - b["val_loss"]) <= LOSS_TOL, (a, b)
        assert abs(a["accuracy"] - b["accuracy"]) <= ACC_TOL_IMAGES / n_train, (a, b)
        assert abs(a["val_accuracy"] - b["val_accuracy"]) <= ACC_TOL_IMAGES / n_val, (a, b)
    for split in ("train", "val", "test"):
        assert abs(one["accuracy"][split] - two["accuracy"][split]) <= ACC_TOL_IMAGES / one["counts"][split] + 1e-4


@pytest.mark.slow
def test_a_dead_worker_ends_the_run_in_one_line_and_resume_continues(one_worker, shapes_dir, tmp_path, launches,
                                                                    monkeypatch, capfd):
    pytest.importorskip("tensorflow", reason="needs edgeproof[train]")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(textwrap.dedent(_DIE))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "run"
    args = ["train", "--data", str(shapes_dir), *SMALL, "--workers", "2", "-o", str(out)]
    t0 = time.monotonic()
    assert run_cli(args) == 3
    assert time.monotonic() - t0 < 200  # the chief did not hang on the dead worker
    err = [ln for ln in capfd.readouterr().err.strip().splitlines() if ln.startswith("edgeproof:")]
    pid = launches[-1].pids[1]
    assert err == [f"edgeproof: error: worker 1 of 2 (pid {pid}) died: killed by SIGKILL; stopped the other "
                   f"workers; '{out}' is as before this run; add --resume to continue after epoch 1 (checkpoint "
                   f"in '{tmp_path / '.run.partial'}')"], err
    _nothing_left(launches[-1])
    assert not out.exists() and json.loads((tmp_path / ".run.partial" / "state.json").read_text())["epoch"] == 1

    monkeypatch.delenv("PYTHONPATH")
    assert run_cli([*args, "--resume"]) == 0
    _nothing_left(launches[-1])
    m = json.loads((out / "metrics.json").read_text())
    assert m["resumed_after_epoch"] == 1 and m["epochs_run"] == 2 and m["distributed"]["workers"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hook", "run"]
    ref = _history(one_worker)
    for a, b in zip(ref, _history(out), strict=True):  # as the uninterrupted run, within the same tolerance
        assert abs(a["loss"] - b["loss"]) <= LOSS_TOL and abs(a["val_loss"] - b["val_loss"]) <= LOSS_TOL, (a, b)
