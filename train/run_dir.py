"""The run folder written by `edgeproof train`, read back without TensorFlow.

    runs/NAME/
      model.keras        the trained model (preprocessing layers inside the graph)
      labels.txt         one class name per line, index order
      preprocess.json    edgeproof.contract.Preprocess as JSON
      split.json         {"data_root", "classes", "seed", "splits": {"train"|"val"|"test": [[path, class_index], ...]}}
      metrics.json       train/val/test accuracy, per-class precision/recall/F1, confusion matrix
      history.csv        per-epoch loss/accuracy
      training.png, confusion.png
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgeproof import user_files
from edgeproof.contract import Preprocess
from edgeproof.errors import UsageError
from edgeproof.runtime.model import read_labels  # one reader for labels files, TF-free

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.txt"
PREPROCESS_FILE = "preprocess.json"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
REQUIRED = (MODEL_FILE, LABELS_FILE, PREPROCESS_FILE)
# Every name train writes into a run folder; anything else in it (convert's default artifacts/, a user's
# notes) belongs to someone else and is carried into the new run folder when a run is replaced.
WRITTEN = frozenset({MODEL_FILE, LABELS_FILE, PREPROCESS_FILE, SPLIT_FILE, METRICS_FILE, HISTORY_FILE,
                     "training.png", "confusion.png"})

log = logging.getLogger(__name__)


@dataclass
class Run:
    root: Path
    model_path: Path
    labels: list[str]
    preprocess: Preprocess
    splits: dict[str, list[tuple[str, int]]]  # may be empty when only model.keras is given

    def split(self, name: str) -> list[tuple[str, int]]:
        if name not in self.splits or not self.splits[name]:
            raise UsageError(
                f"run '{self.root}' has no '{name}' split in {SPLIT_FILE}; "
                f"available: {', '.join(k for k, v in self.splits.items() if v) or 'none'}; pass --data DIR"
            )
        return self.splits[name]


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link `src` (file, symlink or folder tree) at `dst`; copy where links are not possible."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        dst.mkdir()
        for child in src.iterdir():
            _link_tree(child, dst / child.name)
        shutil.copystat(src, dst)
    else:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def keep_foreign_entries(old: Path, new: Path) -> list[str]:
    """Carry every entry of the old run folder `old` that train did not write into the new one `new`.

    The entries are hard-linked (not moved) before the new folder is swapped in, so a kill at any
    moment leaves each of them in the folder at the destination: the old one or the new one.
    """
    try:
        entries = sorted(p for p in old.iterdir() if p.name not in WRITTEN)
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        _link_tree(entry, new / entry.name)
    names = [p.name + ("/" if p.is_dir() and not p.is_symlink() else "") for p in entries]
    if names:
        log.warning("kept %d entr%s of the previous run folder '%s' that train did not write: %s%s",
                    len(names), "y" if len(names) == 1 else "ies", old, ", ".join(names[:10]),
                    " ..." if len(names) > 10 else "")
        if "artifacts/" in names:
            log.warning("'%s' holds artifacts converted from the previous model; re-run 'edgeproof convert "
                        "%s' to convert the new one", old / "artifacts", old)
    return names


def load_run(path: str | Path) -> Run:
    """Accept a run folder or a model.keras inside one."""
    path = Path(path)
    root = path.parent if path.suffix == ".keras" else path
    if not root.exists():
        raise UsageError(f"run folder '{root}' does not exist; train one with 'edgeproof train -o {root}'")
    if not root.is_dir():
        raise UsageError(f"'{path}' is neither a run folder nor a .keras model inside one; give the folder "
                         "'edgeproof train -o' wrote, or its model.keras")
    missing = [f for f in REQUIRED if not (root / f).is_file()]
    model_path = path if path.suffix == ".keras" else root / MODEL_FILE
    if path.suffix == ".keras":
        missing = [f for f in missing if f != MODEL_FILE]
        if not path.is_file():
            missing.insert(0, path.name)
    if missing:
        raise UsageError(
            f"'{root}' is not a complete edgeproof run folder: missing {', '.join(missing)}; "
            "train one with 'edgeproof train' (an interrupted run leaves no model.keras; continue it with "
            "'edgeproof train --resume' and the same -o)"
        )
    try:
        preprocess = Preprocess.from_dict(user_files.read_json(root / PREPROCESS_FILE, user_files.PREPROCESS))
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"'{root / PREPROCESS_FILE}' is not a valid preprocessing contract ({exc}); re-run training") from None
    labels = read_labels(root / LABELS_FILE)
    splits: dict[str, list[tuple[str, int]]] = {}
    split_file = root / SPLIT_FILE
    if split_file.is_file():
        classes, splits = read_split(split_file)
        if classes is not None and [c.strip() for c in classes] != labels:  # labels.txt lines are stripped
            raise UsageError(f"'{root / LABELS_FILE}' does not match the classes the model was trained on "
                             f"({SPLIT_FILE}): {_first_difference(labels, classes)}; labels.txt was edited or "
                             "replaced: restore it (one class per line, in the training order of split.json)")
    return Run(root=root, model_path=model_path, labels=labels, preprocess=preprocess, splits=splits)


def _first_difference(labels: list[str], classes: list[str]) -> str:
    if len(labels) != len(classes):
        return f"{len(labels)} labels for {len(classes)} trained classes"
    i = next(i for i, (a, b) in enumerate(zip(labels, classes)) if a != b.strip())
    return f"line {i + 1} is {json.dumps(labels[i])} but class {i} is {json.dumps(classes[i])}"


def read_split(path: Path) -> tuple[list[str] | None, dict[str, list[tuple[str, int]]]]:
    """(classes, {split: [(path, class index)]}) from split.json; UsageError naming what is malformed."""
    def bad(why: str) -> UsageError:
        return UsageError(f"'{path}' is not a valid {SPLIT_FILE} ({why}); re-run 'edgeproof train', or pass "
                          "--data DIR to use a folder of class subfolders instead")

    try:
        data = user_files.read_json(path, user_files.SPLIT)
    except user_files.UserFileError as exc:
        raise bad(exc.reason) from None
    if not isinstance(data, dict):
        raise bad(f"a JSON {type(data).__name__}, not an object")
    classes = data.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise bad("'classes' is not a list of class names")
    raw = data.get("splits", {})
    if not isinstance(raw, dict):
        raise bad("'splits' is not an object of split name -> [[path, class index], ...]")
    splits: dict[str, list[tuple[str, int]]] = {}
    for name, entries in raw.items():
        if not isinstance(entries, list):
            raise bad(f"split '{name}' is not a list")
        out = []
        for k, entry in enumerate(entries):
            if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                    and isinstance(entry[1], int) and not isinstance(entry[1], bool)
                    and 0 <= entry[1] < (len(classes) if classes is not None else 1 << 31)):
                raise bad(f"entry {k} of split '{name}' is {json.dumps(entry)[:60]}, not [path, class index]")
            out.append((entry[0], entry[1]))
        splits[str(name)] = out
    return classes, splits


TRUST_HINT_MARK = "pass --trust-model"


def keras_load_reason(exc: BaseException) -> str:
    """Why Keras refused a model file, in one whole line (Keras' own text is several sentences on several lines).

    Safe mode's refusal (a Lambda layer's Python bytecode, a TFSMLayer) gets edgeproof's wording: Keras'
    advice to pass `safe_mode=False` is what --trust-model does."""
    from edgeproof.model_trust import TRUST_FLAG

    text = " ".join(str(exc).split())
    if "safe_mode" in text or "unsafe" in text.lower():
        which = "a Lambda layer" if "lambda" in text.lower() else "a TFSMLayer" if "TFSMLayer" in text else \
            "a layer that deserializes Python code"
        return (f"it holds {which}, whose code Keras would run to load it (Keras' safe mode refuses it); if you "
                f"trust this model and its source, pass {TRUST_FLAG} to load it anyway")
    first = text.split(". ")[0]  # the first whole sentence: no cut in the middle of a word
    return f"{type(exc).__name__}: {first if len(first) <= 400 else first[:400].rsplit(' ', 1)[0] + ' ...'}"


def load_keras_model(path: str | Path, what: str = "this command", trust_model: bool = False):
    """The trained Keras model (TensorFlow imported quietly, on demand); a corrupt file is one clear line.

    Keras' safe mode stays on (a Lambda layer's bytecode or a TFSMLayer is refused) unless trust_model."""
    import zipfile

    from edgeproof.train.tf_quiet import import_tensorflow

    path = Path(path)
    if path.is_file() and not zipfile.is_zipfile(path):  # keras would say "File not found" about it
        raise UsageError(f"'{path}' is not a valid .keras file (truncated or corrupt: a .keras model is a zip "
                         "archive); retrain with 'edgeproof train' or restore the file")
    import_tensorflow(what)
    import keras

    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=not trust_model)
    except Exception as exc:  # a corrupt or foreign file: one line, not a traceback  # noqa: BLE001
        why = keras_load_reason(exc)
        if TRUST_HINT_MARK in why:
            raise UsageError(f"cannot load Keras model '{path}': {why}") from None
        raise UsageError(f"cannot load Keras model '{path}': {why}; "
                         "give the model.keras of a complete 'edgeproof train' run") from None
