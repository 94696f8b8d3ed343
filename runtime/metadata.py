"""Read and write the metadata inside an artifact, without TensorFlow.

TFLite: a zip archive appended to the flatbuffer holding ``metadata.json`` (the approach
Ultralytics uses; interpreters ignore trailing bytes). ONNX: ``metadata_props["edgeproof"]``.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from pathlib import Path

from edgeproof.contract import METADATA_KEY, ArtifactMeta
from edgeproof.errors import UsageError

TFLITE_MEMBER = "metadata.json"
# convert writes a few KB (a 21k-class label list is about 400 KB); a bomb that inflates to 1 GiB took
# 2.1 GB of memory, so the archive member and the JSON are bounded before they are read.
MAX_METADATA_BYTES = 1 << 20


def parse_metadata(text: str, path: str | Path) -> ArtifactMeta:
    """ArtifactMeta from the embedded JSON; a damaged record is bad input, never a silent default."""
    if len(text) > MAX_METADATA_BYTES:
        raise _damaged(path, ValueError(f"{len(text):,} bytes of metadata is over the {MAX_METADATA_BYTES:,}-byte limit"))
    try:
        return ArtifactMeta.from_json(text)
    except UsageError as exc:  # a field the contract refuses (a non-integer height, tiny std)
        raise UsageError(f"'{path}' carries invalid edgeproof metadata: {exc}; re-convert it with "
                         "'edgeproof convert' (or override the field with a run flag)") from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise _damaged(path, exc) from None


def tflite_with_metadata(model_bytes: bytes, meta: ArtifactMeta) -> bytes:
    """The flatbuffer bytes followed by a zip that carries the metadata."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(TFLITE_MEMBER, meta.to_json())
    return strip_tflite_metadata(model_bytes) + buf.getvalue()


def strip_tflite_metadata(model_bytes: bytes) -> bytes:
    """The bare flatbuffer (what edgetpu_compiler or a byte-level check should see)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model_bytes)) as zf:
            if TFLITE_MEMBER not in zf.namelist():
                return model_bytes
            # zipfile adds the length of prepended data to header_offset: these are absolute.
            start = min(i.header_offset for i in zf.infolist())
    except zipfile.BadZipFile:
        return model_bytes
    return model_bytes[:start]


def read_tflite_metadata(path: str | Path) -> ArtifactMeta | None:
    try:
        with zipfile.ZipFile(path) as zf:
            info = zf.getinfo(TFLITE_MEMBER)
            if max(info.file_size, info.compress_size) > MAX_METADATA_BYTES:
                raise ValueError(f"its {info.file_size:,}-byte {TFLITE_MEMBER} is over the "
                                 f"{MAX_METADATA_BYTES:,}-byte limit")
            with zf.open(info) as member:  # the declared size can lie: never inflate past the limit
                raw = member.read(MAX_METADATA_BYTES + 1)
            if len(raw) > MAX_METADATA_BYTES:
                raise ValueError(f"{TFLITE_MEMBER} inflates past the {MAX_METADATA_BYTES:,}-byte limit")
            text = raw.decode("utf-8", errors="replace")
    except KeyError:
        return None
    except zipfile.BadZipFile as exc:
        if "CRC" not in str(exc) and "Bad magic" not in str(exc):
            return None  # no (recognisable) archive after the flatbuffer: a model made elsewhere
        raise _damaged(path, exc) from None
    except (zlib.error, EOFError, NotImplementedError, ValueError, OSError) as exc:  # a damaged archive
        raise _damaged(path, exc) from None
    return parse_metadata(text, path)


def _damaged(path: str | Path, exc: BaseException) -> UsageError:
    return UsageError(f"'{path}' carries edgeproof metadata that cannot be read ({type(exc).__name__}: "
                      f"{str(exc)[:120]}); the file is damaged: re-convert it with 'edgeproof convert'")


def read_onnx_metadata(path: str | Path) -> ArtifactMeta | None:
    """Read metadata_props through onnxruntime (a base dependency) or onnx, whichever exists."""
    from edgeproof.runtime.backends.onnx_graph import read_props

    text = read_props(path).get(METADATA_KEY)
    return parse_metadata(text, path) if text else None


def set_onnx_metadata(model, meta: ArtifactMeta) -> None:
    """Set metadata_props on an onnx.ModelProto in place (replacing any earlier edgeproof entry)."""
    keep = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.append(p)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()


def read_metadata(path: str | Path) -> ArtifactMeta | None:
    """The artifact's embedded metadata, or None for a model made elsewhere."""
    suffix = Path(path).suffix.lower()
    if suffix == ".tflite":
        return read_tflite_metadata(path)
    if suffix == ".onnx":
        return read_onnx_metadata(path)
    return None
