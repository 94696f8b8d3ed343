"""OUT/manifest.json: one entry per artifact (sha256, bytes, seconds, options, calibration hash,
status and reason), merged with an existing manifest so formats not re-converted keep their entry.

The runtime refuses an artifact whose sha256 differs from its entry, so an artifact and its entry
are replaced in an order that is safe at every instant of a kill or power cut:
  1. the new file is written and verified under a temp name;
  2. if the entry records a different sha256, it is first rewritten as status "pending" with no
     sha256 (`mark_pending`): the runtime does not check such an entry;
  3. the new file is renamed onto the artifact's name (folder fsynced);
  4. the entry is rewritten with the new sha256 and status "ok".
A kill between 2 and 4 leaves a complete artifact (old or new) with an unchecked entry; never a
good file that the manifest makes the runtime refuse, nor a partial file at the artifact's name.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgeproof.atomic import write_json

MANIFEST_FILE = "manifest.json"
MANIFEST_SCHEMA = 1
PENDING = "pending"  # an artifact being replaced: no sha256, so the runtime does not check it


@dataclass
class ArtifactResult:
    format: str
    path: Path | None
    status: str  # "ok" | "failed" | "pending" (see the module docstring)
    error: str | None = None
    seconds: float = 0.0
    sha256: str | None = None
    bytes: int | None = None
    options: dict[str, Any] = field(default_factory=dict)
    calibration_sha256: str | None = None
    source_sha256: str | None = None
    created: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = self.path.name if self.path else None  # relative to OUT: the folder can move
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], root: Path) -> ArtifactResult:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["path"] = root / d["path"] if d.get("path") else None
        return cls(**known)


@dataclass
class Manifest:
    out_dir: Path
    source: str | None = None
    source_sha256: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] | None = None
    artifacts: list[ArtifactResult] = field(default_factory=list)
    updated: str | None = None

    @property
    def path(self) -> Path:
        return self.out_dir / MANIFEST_FILE

    def get(self, fmt: str) -> ArtifactResult | None:
        return next((a for a in self.artifacts if a.format == fmt), None)

    def put(self, result: ArtifactResult) -> None:
        """Replace the entry for this format (or add it), keeping table order stable."""
        self.artifacts = [a for a in self.artifacts if a.format != result.format] + [result]
        from edgeproof.formats import FORMATS

        order = {name: i for i, name in enumerate(FORMATS)}
        self.artifacts.sort(key=lambda a: order.get(a.format, len(order)))

    @property
    def failed(self) -> list[ArtifactResult]:
        return [a for a in self.artifacts if a.status != "ok"]

    def to_dict(self) -> dict[str, Any]:
        return {"schema": MANIFEST_SCHEMA, "source": self.source, "source_sha256": self.source_sha256,
                "updated": self.updated, "versions": dict(self.versions), "calibration": self.calibration,
                "artifacts": {a.format: a.to_dict() for a in self.artifacts}}

    def write(self) -> Path:
        return write_json(self.path, self.to_dict())

    def mark_pending(self, fmt: str, new_sha256: str) -> bool:
        """Before a file with `new_sha256` replaces `fmt`'s artifact: if the entry vouches for another
        sha256, rewrite it as pending (unchecked) first. True when the manifest was rewritten."""
        entry = self.get(fmt)
        if entry is None or not entry.sha256 or entry.sha256 == new_sha256:
            return False
        entry.status, entry.sha256, entry.bytes = PENDING, None, None
        entry.error = "being replaced: an interrupted conversion left this entry; re-run edgeproof convert"
        self.write()
        return True

    def entry_for(self, path: Path) -> ArtifactResult | None:
        """The entry whose artifact is the file `path` (by name), or None."""
        return next((a for a in self.artifacts if a.path is not None and a.path.name == Path(path).name), None)


def refuse_foreign_files(out_dir: Path, filenames: dict[str, str]) -> None:
    """Before convert writes into `out_dir`: a manifest.json edgeproof did not write, or a file at an artifact's
    name that our manifest does not list, is the user's and would be replaced; refuse (UsageError), keep it.

    filenames: {format name: the artifact's file name} of the formats about to be written."""
    from edgeproof.errors import UsageError
    from edgeproof.runtime.integrity import read_manifest

    mpath = out_dir / MANIFEST_FILE
    move = "move it away or choose another -o (an empty or new folder, e.g. RUN/artifacts)"
    data, why = read_manifest(mpath)
    ours = isinstance(data, dict) and isinstance(data.get("schema"), int) and isinstance(data.get("artifacts"), dict) \
        and "source" in data
    if os.path.lexists(mpath) and not ours:
        what = why or f"{mpath} has no edgeproof schema, source and artifacts"
        raise UsageError(f"'{mpath}' is not a manifest 'edgeproof convert' wrote ({what}); convert would replace "
                         f"it: {move}")
    listed = {fmt: Path(str(e.get("path") or "")).name for fmt, e in (data or {}).get("artifacts", {}).items()
              if isinstance(e, dict)} if ours else {}
    for fmt, name in filenames.items():
        if os.path.lexists(out_dir / name) and listed.get(fmt) != name:
            raise UsageError(f"'{out_dir / name}' exists and is not an artifact the manifest there lists; convert "
                             f"would replace it with its {fmt} artifact: {move}")


def load_manifest(out_dir: str | Path) -> Manifest:
    """The manifest in `out_dir`, or an empty one (an unreadable manifest is treated as absent)."""
    from edgeproof.runtime.integrity import read_manifest

    out_dir = Path(out_dir)
    m = Manifest(out_dir=out_dir)
    data, _ = read_manifest(out_dir / MANIFEST_FILE)
    if not isinstance(data, dict):
        return m
    m.source, m.source_sha256 = data.get("source"), data.get("source_sha256")
    m.versions = dict(data.get("versions") or {})
    m.calibration, m.updated = data.get("calibration"), data.get("updated")
    for entry in (data.get("artifacts") or {}).values():
        try:
            m.artifacts.append(ArtifactResult.from_dict(entry, out_dir))
        except (TypeError, KeyError):
            continue
    return m
