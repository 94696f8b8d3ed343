"""Models whose embedded metadata is edited by hand (bad labels, sizes, std) for the bad-input tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _runtime_models import color_onnx


def onnx_with_meta(path: Path, edit: dict[str, Any] | None = None, pp_edit: dict[str, Any] | None = None,
                   **kw) -> Path:
    """color_onnx with its metadata JSON changed: top-level keys from `edit`, preprocess keys from `pp_edit`."""
    import onnx

    from edgeproof.contract import METADATA_KEY

    color_onnx(path, **kw)
    model = onnx.load(str(path))
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            meta = json.loads(prop.value)
            meta.update(edit or {})
            meta["preprocess"].update(pp_edit or {})
            prop.value = json.dumps(meta)
    onnx.save(model, str(path))
    return path
