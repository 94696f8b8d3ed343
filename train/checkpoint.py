"""Per-epoch checkpoints of `edgeproof train`, so `--resume` continues after a kill or a power cut.

    runs/.NAME.partial/          (next to the run folder runs/NAME, hidden, one per destination)
      lock                       flock held by the training process (one writer per destination)
      state.json                 the commit point: epoch, history, early-stopping state, config, data
      epoch-0003.<token>.keras   model + optimizer state after that epoch (Keras 3 .keras)
      best-0002.<token>.npz      the best epoch's weights (restored at the end, as EarlyStopping does)

Every file is written atomically under a name never used before, then state.json is replaced
atomically to point at them; files state.json no longer names are removed afterwards. A kill at
any moment therefore leaves a state.json whose files are complete. The folder is removed once the
run folder is in place.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgeproof.atomic import Flock, atomic_path, clean_stale, write_json
from edgeproof.errors import UsageError

STATE_FILE = "state.json"
LOCK_FILE = "lock"
FORMAT_VERSION = 1
# TrainConfig field -> how the user sets it (for "what differs" messages); fields not listed
# (out_dir, data_dir: the data is compared by content) may differ on --resume.
CONFIG_FLAGS = {"model": "--model", "img_size": "--img-size", "epochs": "--epochs", "batch_size": "--batch-size",
                "lr": "--lr", "seed": "--seed", "alpha": "--alpha", "patience": "--patience",
                "augment": "augment", "interpolation": "interpolation", "deterministic": "deterministic",
                "phases": "phases", "weights": "--weights"}


def partial_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle/augmentation seed of one epoch: a function of (seed, epoch) only, so a resumed run
    feeds epoch k exactly the batches the uninterrupted run fed it."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint32)[0])


def resume_config(cfg: Any) -> dict[str, Any]:
    """The options a resumed run must share with its checkpoint (JSON-shaped). The worker count is not
    one of them: the global batch, hence the training, is the same on any number of workers."""
    d = asdict(cfg)
    out = {k: d[k] for k in CONFIG_FLAGS if k in d}
    phases = out.pop("phases", None)
    if phases:  # absent when there are none, as in checkpoints written before phases existed
        out["phases"] = json.loads(json.dumps([{k: v for k, v in p.items() if k not in ("select", "label")} for p in phases],
                                              default=str))
    if out.get("weights", "none") == "none":  # likewise (checkpoints from before --weights)
        out.pop("weights", None)
    return out


def data_fingerprint(data: Any) -> dict[str, Any]:
    """Classes, per-split counts and a sha256 over the decoded pixels and labels of every split."""
    h = hashlib.sha256(json.dumps(list(data.classes)).encode())
    counts = {}
    for name, split in data.splits.items():
        counts[name] = len(split.labels)
        h.update(name.encode())
        h.update(np.ascontiguousarray(split.labels, np.int64).tobytes())
        h.update(np.ascontiguousarray(split.images).tobytes())
    return {"classes": list(data.classes), "counts": counts, "sha256": h.hexdigest()}


@dataclass
class EarlyStop:
    """keras.callbacks.EarlyStopping(monitor='val_loss', restore_best_weights=True), with state that
    can be saved: improvement is val_loss strictly below the best; stop after `patience` epochs
    without one (never after the first epoch)."""

    patience: int
    best: float | None = None
    best_epoch: int = 0  # 0-based, as Keras counts
    wait: int = 0
    stopped: bool = False

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record one epoch's val_loss; True when it is the new best (the caller keeps its weights)."""
        self.wait += 1
        if self.best is None or val_loss < self.best:
            self.best, self.best_epoch, self.wait = float(val_loss), epoch, 0
            return True
        if self.wait >= self.patience and epoch > 0:
            self.stopped = True
        return False


@dataclass
class State:
    epoch: int  # epochs completed
    history: dict[str, list[float]]
    early: EarlyStop
    config: dict[str, Any]
    data: dict[str, Any]
    model_file: str = ""
    best_file: str = ""
    train_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> State:
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"checkpoint format {d.get('version')!r}, this edgeproof reads {FORMAT_VERSION}")
        early = EarlyStop(**d["early"])
        return cls(epoch=int(d["epoch"]), history={k: [float(x) for x in v] for k, v in d["history"].items()},
                   early=early, config=d["config"], data=d["data"], model_file=d["model_file"],
                   best_file=d["best_file"], train_seconds=float(d.get("train_seconds", 0.0)),
                   extra=d.get("extra") or {})


def config_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [f"{CONFIG_FLAGS[k]} {now.get(k)!r} (checkpoint: {saved.get(k)!r})"
            for k in CONFIG_FLAGS if saved.get(k) != now.get(k)]  # phases: absent on both sides unless used


def data_differences(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    if saved.get("classes") != now.get("classes"):
        return f"classes {','.join(now['classes'])} (checkpoint: {','.join(saved.get('classes') or [])})"
    counts = [f"{k}: {n} images (checkpoint: {saved['counts'].get(k)})"
              for k, n in now["counts"].items() if saved.get("counts", {}).get(k) != n]
    if counts:
        return ", ".join(counts)
    if saved.get("sha256") != now.get("sha256"):
        return "same classes and image counts, but different pixels, labels or split"
    return None


class Checkpoints:
    """The checkpoint folder of one destination. Use as a context manager: holds the lock."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.dir = partial_dir(self.out)
        self._lock: Flock | None = None

    def __enter__(self) -> Checkpoints:
        self.dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = Flock(self.dir / LOCK_FILE)
        except BlockingIOError:
            raise UsageError(f"another 'edgeproof train' is writing to '{self.out}' right now (its checkpoint "
                             f"folder '{self.dir}' is locked); wait for it or choose another -o") from None
        clean_stale(self.dir)  # temp files of a writer killed mid-save
        return self

    def __exit__(self, *exc: object) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load(self) -> State | None:
        """The last committed state, or None when there is none. A damaged one is one clear line."""
        path = self.dir / STATE_FILE
        if not path.is_file():
            return None
        try:
            state = State.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"the checkpoint '{path}' is unreadable ({exc}); train without --resume to start "
                             "over") from None
        for name in (state.model_file, state.best_file):
            if name and not (self.dir / name).is_file():
                raise UsageError(f"the checkpoint in '{self.dir}' is incomplete ({name} is missing); train "
                                 "without --resume to start over")
        return state

    def model_path(self, state: State) -> Path:
        return self.dir / state.model_file

    def best_weights(self, state: State) -> list[np.ndarray] | None:
        if not state.best_file:
            return None
        with np.load(self.dir / state.best_file) as f:
            return [f[f"arr_{i}"] for i in range(len(f.files))]

    def save(self, model: Any, state: State, best_weights: list[np.ndarray] | None) -> None:
        """Write the model (with optimizer state) and, when given, new best weights, then commit state."""
        token = os.urandom(4).hex()
        state.model_file = f"epoch-{state.epoch:04d}.{token}.keras"
        with atomic_path(self.dir / state.model_file, suffix=".keras") as tmp:
            model.save(tmp)
        if best_weights is not None:
            state.best_file = f"best-{state.early.best_epoch + 1:04d}.{token}.npz"
            with atomic_path(self.dir / state.best_file) as tmp, open(tmp, "wb") as fh:
                np.savez(fh, *best_weights)
        write_json(self.dir / STATE_FILE, state.to_dict())  # the commit point
        keep = {STATE_FILE, LOCK_FILE, state.model_file, state.best_file}
        for entry in self.dir.iterdir():
            if entry.name not in keep and not entry.name.startswith("."):
                entry.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def remove_if_empty(self) -> None:
        """After a failure before the first commit: leave no folder that holds nothing to resume."""
        if not (self.dir / STATE_FILE).exists():
            self.remove()
