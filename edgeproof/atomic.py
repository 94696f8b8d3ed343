"""Atomic file writes: a temp file in the same folder, fsync, rename, fsync the folder.

A killed process leaves at most a hidden temp entry, never a file that looks complete. Temp entries
carry the writer's pid, `.NAME.PID-XXXXXXXX.tmp` (or `.old` for a folder being replaced), so the
next run can remove those whose writer is dead (`clean_stale`) without touching anything else.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
# .NAME.PID-RAND.tmp[.ext] | .NAME.PID-RAND.old | .NAME.PID-RAND.probe  (RAND: mkstemp's 8 characters)
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[a-z0-9_]{8}\.(?P<kind>tmp|old|probe)(\.[A-Za-z0-9]+)?$")
_SCRATCH_RE = re.compile(r"^edgeproof-(?P<what>[a-z0-9]+)-(?P<pid>\d+)-[a-z0-9_]{8}$")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def no_space(exc: BaseException) -> bool:
    """The disk (or quota) is full: OSError ENOSPC/EDQUOT, or a native library's error saying so."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc)


def fsync_dir(folder: str | Path) -> None:
    """Make renames/creations in `folder` durable (a power cut after it cannot undo them)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - e.g. a platform without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def temp_name_prefix(dest: Path) -> str:
    return f".{dest.name}.{os.getpid()}-"


@contextmanager
def atomic_path(dest: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path next to ``dest``; on success it is renamed onto ``dest``, on error removed.

    `suffix` is appended after '.tmp' for writers that insist on an extension (Keras: '.keras').
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_name_prefix(dest), suffix=".tmp" + suffix, dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_file():
            fsync_file(tmp_path)
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp_path, dest)
    except BaseException:
        if tmp_path.is_dir():
            shutil.rmtree(tmp_path, ignore_errors=True)
        else:
            tmp_path.unlink(missing_ok=True)
        raise
    fsync_dir(dest.parent)


def temp_dir_beside(dest: str | Path, kind: str = "tmp") -> Path:
    """A new empty hidden folder next to `dest` (same filesystem, so it can be renamed onto it)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=temp_name_prefix(dest), suffix=f".{kind}", dir=dest.parent))


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_dir(tmp: str | Path, dest: str | Path) -> None:
    """Put the finished folder `tmp` at `dest`; an existing `dest` is replaced.

    Where the kernel can swap two paths atomically, `dest` is always either the old or the new
    folder. Elsewhere the old one is first renamed to `.NAME.PID-X.old`: a kill in between leaves no
    `dest`, and `clean_stale` puts the old folder back.
    """
    tmp, dest = Path(tmp), Path(dest)
    if not dest.exists():
        os.replace(tmp, dest)
    elif _exchange(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)  # now the old folder
    else:
        old = temp_dir_beside(dest, "old")
        os.rmdir(old)
        os.replace(dest, old)
        try:
            os.replace(tmp, dest)
        except BaseException:
            os.replace(old, dest)
            raise
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(dest.parent)


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (or cannot be probed: assume alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def clean_stale(folder: str | Path, name: str | None = None) -> list[str]:
    """Remove temp entries in `folder` left by dead edgeproof processes; return what was done.

    Only names of our own pattern (`.NAME.PID-XXXXXXXX.tmp|old|probe`, NAME == `name` when given)
    whose PID is not a running process are touched. A `.old` folder whose destination is missing
    (killed mid-swap) is renamed back to the destination instead of removed. Note: pids are per
    host/pid-namespace; processes sharing the folder from another container are not seen.
    """
    folder = Path(folder)
    done: list[str] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return done
    for entry in entries:
        m = _TEMP_RE.match(entry.name)
        if not m or (name is not None and m["name"] != name) or pid_alive(int(m["pid"])):
            continue
        dest = folder / m["name"]
        try:
            if m["kind"] == "old" and entry.is_dir() and not os.path.lexists(dest):
                os.replace(entry, dest)
                done.append(f"restored {dest.name} from {entry.name}")
                continue
            _remove(entry)
            done.append(f"removed {entry.name}")
        except OSError:
            continue
    return done


class Flock:
    """An exclusive flock on `path`, taken now: a folder (no file is added to it) or a lock file created
    when missing. BlockingIOError at once when another process holds it; the kernel releases it when
    the holder exits or is killed, so a kill -9 never leaves a stale lock."""

    def __init__(self, path: str | Path, folder: bool = False) -> None:
        flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if folder else os.O_RDWR | os.O_CREAT
        self.fd: int | None = os.open(path, flags, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.close()
            raise BlockingIOError(errno.EWOULDBLOCK, "locked by another process", str(path)) from None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # releases the flock
            self.fd = None

    def __enter__(self) -> Flock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def scratch_dir(what: str) -> Iterator[Path]:
    """A private temp folder in the system temp dir (`edgeproof-WHAT-PID-XXXXXXXX`), removed on exit;
    those of dead processes (killed before their cleanup ran) are removed first."""
    root = Path(tempfile.gettempdir())
    for entry in root.glob(f"edgeproof-{what}-*"):
        m = _SCRATCH_RE.match(entry.name)
        if m and m["what"] == what and not pid_alive(int(m["pid"])):
            _remove(entry)
    path = Path(tempfile.mkdtemp(prefix=f"edgeproof-{what}-{os.getpid()}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_bytes(dest: str | Path, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text(dest: str | Path, text: str) -> Path:
    return write_bytes(dest, text.encode("utf-8"))


def write_json(dest: str | Path, obj: Any) -> Path:
    return write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def copy_file(src: str | Path, dest: str | Path) -> Path:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)
    return Path(dest)


def write_png(fig: Any, dest: str | Path) -> Path:
    """Write a matplotlib figure as PNG atomically, then close it."""
    import matplotlib.pyplot as plt

    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return Path(dest)
