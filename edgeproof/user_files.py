"""Read a file the user names on the command line: a regular file, read with a size bound that fits its kind.

`serve --api-key-file /dev/zero` used to grow to 6.3 GB, a FIFO hung without a word, and a 1.5 GB sparse list
file passed to `run --source` reached 3.5 GB. Every file a user names (labels, list file, run-folder JSON,
cluster file, key file, device profile) is read here instead:

- it must be a regular file: a directory, FIFO, socket or device is refused without reading a byte (it is
  opened with O_NONBLOCK and checked with fstat, so a path swapped for a FIFO after a stat cannot block);
- it may be at most its kind's limit, checked from fstat and again while reading (a file that grows is cut
  off at limit + 1 bytes, never read whole);
- text must be UTF-8; JSON must parse (nesting too deep is a parse error, not a RecursionError).

Every refusal is a UsageError of one line: what was received, what is valid, what to do.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeproof.errors import UsageError

KiB, MiB = 2**10, 2**20


class UserFileError(UsageError):
    """A user-named file that cannot be used; `reason` is the short why (for callers that word their own line)."""

    def __init__(self, where: str, reason: str, kind: FileKind):
        super().__init__(f"{where}: {reason}; give {kind.valid}")
        self.reason = reason


@dataclass(frozen=True)
class FileKind:
    """What a file is for: its name in messages, its size limit in bytes, and what a valid one holds."""

    what: str
    limit: int
    valid: str


# 100,000 labels (contract.MAX_LABELS) of 300 bytes; a 21k-class ImageNet list is about 400 KB
LABELS = FileKind("labels file", 32 * MiB, "a UTF-8 text file, one label per line")
# a million image paths of 200 bytes
LIST = FileKind("list file", 256 * MiB, "a UTF-8 text file with one image path per line")
PREPROCESS = FileKind("preprocessing contract", 1 * MiB, "the preprocess.json 'edgeproof train' writes")
# one [path, class] pair per image of the dataset: 10 million images of 100 bytes
SPLIT = FileKind("split file", 1024 * MiB, "the split.json 'edgeproof train' writes")
METRICS = FileKind("metrics file", 64 * MiB, "the metrics.json 'edgeproof train' writes")
CLUSTER = FileKind("cluster file", 1 * MiB, "a JSON cluster file (see docs/scale-out.md)")
KEY = FileKind("API key file", 4 * KiB, "a small text file holding one key")
PROFILE = FileKind("device profile", 1 * MiB, "a TOML device profile (see devices/profiles/)")
JSON_REPORT = FileKind("JSON file", 16 * MiB, "a JSON file edgeproof wrote")


def _where(p: Path, kind: FileKind, flag: str | None) -> str:
    return f"{flag} '{p}'" if flag else f"{kind.what} '{p}'"


def _size(n: int) -> str:
    return f"{n / MiB:g} MiB" if n >= MiB else f"{n / KiB:g} KiB" if n >= KiB else f"{n} bytes"


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes(path: str | Path, kind: FileKind, flag: str | None = None) -> bytes:
    """The file's bytes, or UsageError in one line. `flag` names where the path came from (e.g. '--cluster')."""
    p = Path(path)
    where = _where(p, kind, flag)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        why = "a broken symlink (its target is missing)" if p.is_symlink() else "no such file"
        raise UserFileError(where, f"cannot read it ({why})", kind) from None
    except OSError as exc:
        raise UserFileError(where, f"cannot read it ({exc.strerror or type(exc).__name__})", kind) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserFileError(where, f"it is {_kind_of(st.st_mode)}, not a regular file (it was not read)", kind)
        if st.st_size > kind.limit:
            raise UserFileError(where, f"it is {st.st_size:,} bytes, over the {_size(kind.limit)} limit for a "
                                f"{kind.what}", kind)
        chunks, total = [], 0
        while total <= kind.limit:
            chunk = os.read(fd, min(MiB, kind.limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > kind.limit:
            raise UserFileError(where, f"it grew past the {_size(kind.limit)} limit for a {kind.what} while it "
                                "was read", kind)
        return b"".join(chunks)
    except OSError as exc:
        raise UserFileError(where, f"cannot read it ({exc.strerror or type(exc).__name__})", kind) from None
    finally:
        os.close(fd)


def read_text(path: str | Path, kind: FileKind, flag: str | None = None) -> str:
    """read_bytes decoded as UTF-8 (a BOM is dropped); NUL bytes are refused as a binary file."""
    data = read_bytes(path, kind, flag)
    where = _where(Path(path), kind, flag)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise UserFileError(where, f"it is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}; a "
                            "binary file?)", kind) from None
    if "\x00" in text:
        raise UserFileError(where, "it holds NUL bytes (a binary file?)", kind)
    return text


def read_json(path: str | Path, kind: FileKind, flag: str | None = None) -> Any:
    """read_text parsed as JSON; a syntax error or nesting too deep is one line naming the position."""
    text = read_text(path, kind, flag)
    where = _where(Path(path), kind, flag)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserFileError(where, f"it is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})",
                            kind) from None
    except RecursionError:
        raise UserFileError(where, "it is not valid JSON (nested too deeply to parse)", kind) from None
    except ValueError as exc:  # an integer past Python's 4,300-digit conversion limit
        raise UserFileError(where, f"it is not usable JSON ({str(exc).split(';')[0]})", kind) from None


def is_regular_file(path: str | Path) -> bool:
    """True for a path that names a regular file (following symlinks); never opens it."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False
