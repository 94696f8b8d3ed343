"""The model card the page shows and `GET /v1/model` returns, with the parity verdict when one exists.

The verdict comes from the files `edgeproof parity` and `convert` leave next to the artifact (read
once at start-up, never per request): RUN/parity/parity.json (the run layout), a parity.json beside
the model, or a "parity" entry for this file in the manifest.json beside it. Only file names go out:
no server path is ever sent.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MAX_JSON_BYTES = 16 * 2**20


def _read_json(path: Path) -> Any:
    try:
        if not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        log.warning("ignoring unreadable %s (%s)", path.name, type(exc).__name__)
        return None


def _from_parity_json(report: Any, model_file: str, source: str) -> dict | None:
    if not isinstance(report, dict) or not isinstance(report.get("results"), list):
        return None
    rows = [r for r in report["results"] if isinstance(r, dict) and Path(str(r.get("path") or "")).name == model_file]
    if not rows:
        return None
    per_backend = []
    for r in rows:
        m = r.get("metrics") if isinstance(r.get("metrics"), dict) else {}
        verdict = m.get("verdict") or ("fail" if r.get("failures") else r.get("status"))
        per_backend.append({k: v for k, v in {
            "backend": r.get("backend"), "verdict": verdict, "top1_agreement": m.get("top1_agreement"),
            "max_abs": m.get("max_abs"), "delta_accuracy_pp": m.get("delta_acc_pp"),
            "failures": [f.get("message") for f in r.get("failures") or [] if isinstance(f, dict)][:5],
        }.items() if v not in (None, [])})
    passed = all(b.get("verdict") == "pass" for b in per_backend)
    n = (report.get("images") or {}).get("n") if isinstance(report.get("images"), dict) else None
    return {"verdict": "pass" if passed else "fail", "source": source, "images": n, "backends": per_backend}


def parity_verdict(model_path: Path) -> dict | None:
    """The newest verdict recorded for this file, or None when parity was never run on it."""
    name, here = model_path.name, model_path.parent
    for candidate, shown in ((here / "parity.json", "parity.json"),
                             (here.parent / "parity" / "parity.json", "../parity/parity.json")):
        found = _from_parity_json(_read_json(candidate), name, shown)
        if found:
            return found
    from edgeproof.runtime.integrity import manifest_entry

    entry = manifest_entry(model_path)[0]  # the lookup the sha256 check uses (symlinks included)
    if isinstance(entry, dict) and isinstance(entry.get("parity"), dict):
        p = entry["parity"]
        return {"verdict": str(p.get("verdict", "unknown")), "source": "manifest.json",
                **{k: v for k, v in p.items() if k != "verdict"}}
    return None


def model_card(model, name: str, engine, config) -> dict:
    """Everything a user needs to trust what answers: labels, format, backend, placement, verdict, limits."""
    pp = model.preprocess
    verified = getattr(model.backend, "verified_sha256", None)
    return {
        "name": name,
        "file": model.path.name,
        "format": model.format,
        "backend": model.backend_name,
        "placement": model.placement,
        "labels": list(model.labels),
        "preprocess": {"height": pp.height, "width": pp.width, "color": pp.color, "layout": pp.layout, "channels": pp.channels,
                       "interpolation": pp.interpolation, "scale": pp.scale, "mean": list(pp.mean),
                       "std": list(pp.std)},
        "input": model.input_spec.to_dict(),
        "output": model.output_spec.to_dict(),
        "integrity": {"sha256_verified": bool(verified), "sha256": verified},
        "parity": parity_verdict(model.path),
        "serving": {"max_batch": engine.max_batch, "backend_can_batch": engine.can_batch,
                    "batch_timeout_ms": config.batch_timeout_ms, "workers": len(engine.models),
                    "max_body_bytes": config.max_body, "top_k": config.top_k, "auth": config.auth},
    }
