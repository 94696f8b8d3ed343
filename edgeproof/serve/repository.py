"""The models a server holds: one artifact, or a model repository laid out as Triton lays it out.

    MODELS_DIR/
      colour/1/model.onnx          # NAME/VERSION/<one .tflite or .onnx file>
      colour/2/model.onnx
      flowers/model.tflite         # or NAME/<file>: version "1"

Each version is a model of its own here (its own interpreters, batcher and metrics); a request names the
model and, optionally, the version (default: the highest). Models are loaded at start (up to
`max_loaded`); one that fails to load is reported as UNAVAILABLE with its reason in the index and the
others serve. The OIP repository extension loads and unloads by name (all versions); with `max_loaded`,
loading one more unloads the least recently used, and a request for a model unloaded that way loads it
again (one explicitly unloaded stays unloaded until loaded). Unloading stops taking requests for that
model, lets those in flight finish (up to the graceful timeout), then stops its interpreters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgeproof.serve.service import HttpError

log = logging.getLogger(__name__)
SUFFIXES = (".tflite", ".onnx")


def _name_ok(name: str) -> bool:
    return bool(name) and len(name) <= 128 and all(c.isalnum() or c in "._-" for c in name)


def scan(root: Path) -> dict[str, dict[str, Path | str]]:
    """{name: {version: artifact path, or a string saying why that folder holds no usable artifact}}."""
    found: dict[str, dict[str, Path | str]] = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _name_ok(d.name):
            log.warning("skipping '%s' in the model repository: a model name takes letters, digits, '.', '_', '-'",
                        d.name[:80])
            continue
        versions: dict[str, Path | str] = {}
        for v in sorted((p for p in d.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)):
            versions[str(int(v.name))] = _artifact(v)
        if not versions:
            versions["1"] = _artifact(d)
        found[d.name] = versions
    return found


def _artifact(folder: Path) -> Path | str:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)
    if len(files) == 1:
        return files[0]
    return (f"{folder.name}/ holds {len(files)} .tflite/.onnx files; a version folder holds exactly one"
            if files else f"{folder.name}/ holds no .tflite or .onnx file")


@dataclass
class Entry:
    name: str
    versions: dict[str, Path | str]  # version -> artifact, or why there is none
    services: dict[str, object] = field(default_factory=dict)  # loaded versions -> Service
    reasons: dict[str, str] = field(default_factory=dict)  # versions that failed to load -> why
    last_used: float = 0.0
    held_off: bool = False  # unloaded by request: stays unloaded until a load request

    @property
    def latest(self) -> str:
        return max(self.versions, key=int)


class Repository:
    def __init__(self, models: dict[str, dict[str, Path | str]], build: Callable[[str, str, Path], object],
                 config, metrics, budget, pool, max_loaded: int | None = None) -> None:
        self.entries = {n: Entry(n, v) for n, v in models.items()}
        self.build, self.config, self.metrics, self.budget, self.pool = build, config, metrics, budget, pool
        self.max_loaded = max_loaded
        self.single = len(self.entries) == 1
        self.default = next(iter(self.entries)) if self.entries else None
        self._started: set[int] = set()  # id() of the Services whose engines run
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    # ---- loading (build runs off the event loop: it loads interpreters)
    def load_blocking(self, name: str) -> int:
        """Build every version of `name` (at start, before the loop runs); returns how many loaded."""
        e = self.entries[name]
        for version, path in e.versions.items():
            if not isinstance(path, Path):
                e.reasons[version] = path
                continue
            try:
                e.services[version] = self.build(name, version, path)
                e.reasons.pop(version, None)
            except Exception as exc:  # noqa: BLE001 - one model that fails to load must not take the others down
                e.reasons[version] = str(exc).splitlines()[0][:300] or type(exc).__name__
                log.error("model '%s' version %s failed to load: %s", name, version, e.reasons[version])
        e.last_used = time.monotonic()
        return len(e.services)

    def loaded(self) -> list[Entry]:
        return [e for e in self.entries.values() if e.services]

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._lock = loop, asyncio.Lock()
        for e in self.loaded():
            for svc in e.services.values():
                self._start(svc, loop)

    def _start(self, svc, loop) -> None:
        svc.engine.start(loop)
        self._started.add(id(svc))
        svc.metrics.ready.set(1)

    def _stop(self, svc) -> None:
        svc.metrics.ready.set(0)
        if id(svc) in self._started:
            self._started.discard(id(svc))
            svc.engine.stop()
        else:  # loaded, never started (start-up failed later): close its interpreters
            for m in svc.engine.models:
                m.close()

    async def load(self, name: str) -> Entry:
        e = self._entry(name)
        async with self._lock:
            e.held_off = False
            if e.services:
                e.last_used = time.monotonic()
                return e
            if self.max_loaded is not None:
                while len(self.loaded()) >= self.max_loaded:
                    victim = min(self.loaded(), key=lambda x: x.last_used)
                    log.info("unloading '%s' (least recently used) to load '%s' (--max-models-loaded %d)",
                             victim.name, name, self.max_loaded)
                    await self._unload(victim)
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.load_blocking, name)
            for svc in e.services.values():
                self._start(svc, loop)
        if not e.services:
            raise HttpError(400, f"failed to load '{name}': {'; '.join(e.reasons.values())}")
        return e

    async def unload(self, name: str) -> None:
        e = self._entry(name)
        async with self._lock:
            e.held_off = True
            await self._unload(e)

    async def _unload(self, e: Entry) -> None:
        services, e.services = e.services, {}
        for svc in services.values():
            svc.metrics.ready.set(0)
            await svc.drain(self.config.graceful_timeout)
            await asyncio.get_running_loop().run_in_executor(None, self._stop, svc)

    def close(self) -> None:
        for e in self.entries.values():
            for svc in e.services.values():
                self._stop(svc)
            e.services = {}
        self.pool.shutdown(wait=True, cancel_futures=True)

    # ---- lookups
    def _entry(self, name: str) -> Entry:
        e = self.entries.get(name)
        if e is None:
            known = ", ".join(f"'{n}'" for n in list(self.entries)[:10]) or "no model"
            raise HttpError(404, f"model '{name[:80]}' not found; this server serves: {known}")
        return e

    def version_of(self, e: Entry, version: str | None) -> str:
        if version in (None, ""):
            return e.latest
        if version not in e.versions:
            raise HttpError(404, f"model '{e.name}' has no version '{version[:20]}'; its versions: "
                                 f"{', '.join(e.versions)}")
        return version

    def loaded_service(self, name: str, version: str | None = None):
        """The Service if that version is loaded now, else None (readiness; never loads)."""
        e = self._entry(name)
        return e.services.get(self.version_of(e, version))

    async def service(self, name: str | None, version: str | None = None):
        """The Service that answers a request, loading the model first if LRU unloading had dropped it."""
        if name is None:
            name = self.default
            if name is None:
                raise HttpError(404, "this server has no models")
        e = self._entry(name)
        v = self.version_of(e, version)
        if v not in e.services:
            if e.held_off:
                raise HttpError(400, f"model '{name}' is unloaded; load it with POST /v2/repository/models/{name}/load")
            if e.reasons.get(v) and e.services:
                raise HttpError(503, f"model '{name}' version {v} failed to load: {e.reasons[v]}")
            await self.load(name)
            if v not in e.services:
                raise HttpError(503, f"model '{name}' version {v} failed to load: {e.reasons.get(v, 'unknown')}")
        e.last_used = time.monotonic()
        return e.services[v]

    def index(self) -> list[dict]:
        """Triton's repository index: name, version, state (READY / UNAVAILABLE) and reason."""
        out = []
        for e in self.entries.values():
            for v in e.versions:
                svc = e.services.get(v)
                if svc is not None and svc.engine.ready:
                    out.append({"name": e.name, "version": v, "state": "READY", "reason": ""})
                else:
                    why = e.reasons.get(v) or (svc.engine.not_ready_reason if svc is not None else
                                               "unloaded" if e.held_off else "not loaded")
                    out.append({"name": e.name, "version": v, "state": "UNAVAILABLE", "reason": why})
        return out
