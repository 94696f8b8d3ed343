"""Filter what native libraries print on file descriptor 2 (C++ log lines Python cannot configure).

TensorFlow's start-up banner and LiteRT's 'INFO: Created ... XNNPACK delegate' line are written by
C++ straight to fd 2. `filtered_stderr(keep)` points fd 2 at an in-memory file for the block, then
writes back every line `keep` accepts, so real errors and warnings still show.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Iterator

# fd 2 is process-wide: two threads swapping it at once (a video opened in a source's reader thread while a
# model loads elsewhere) could restore each other's buffer and leave stderr captured for good.
_FD2_LOCK = threading.RLock()


@contextlib.contextmanager
def filtered_stderr(keep: Callable[[str], bool]) -> Iterator[None]:
    with _FD2_LOCK:
        with _filtered_stderr(keep):
            yield


@contextlib.contextmanager
def _filtered_stderr(keep: Callable[[str], bool]) -> Iterator[None]:
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded use): nothing to filter
        yield
        return
    try:
        buf = os.memfd_create("edgeproof-stderr")  # Linux; no tempfile import on the one-shot path
    except (AttributeError, OSError):
        import tempfile

        with tempfile.TemporaryFile() as tmp:
            buf = os.dup(tmp.fileno())
    os.dup2(buf, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.lseek(buf, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(buf, 65536):
            chunks.append(chunk)
        os.close(buf)
        rest = [ln for ln in b"".join(chunks).decode(errors="replace").splitlines() if ln.strip() and keep(ln)]
        if rest:
            sys.stderr.write("\n".join(rest) + "\n")
            sys.stderr.flush()


class _Terminal:
    """The stream edgeproof's own lines go to: sys.stderr, or the real stderr saved by `library_output_to`.

    rich's console, error lines and progress bars write here, so while TensorFlow's chatter is sent to a
    log file (fd 1, fd 2, sys.stdout and sys.stderr all point at it) edgeproof's lines still reach the user.
    """

    def __init__(self) -> None:
        self.stack: list = []

    @property
    def _stream(self):
        return self.stack[-1] if self.stack else sys.stderr

    def write(self, text: str) -> int:
        return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self._stream, "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._stream.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self._stream, "encoding", None) or "utf-8"


TERMINAL = _Terminal()


class _Sink:
    """sys.stdout/sys.stderr during the block: the log file; after it, nowhere (late writes from handlers
    that kept a reference, such as TensorFlow's logging handler, are dropped instead of failing)."""

    def __init__(self, fh) -> None:
        self.fh = fh

    def write(self, text: str) -> int:
        if self.fh is not None:
            self.fh.write(text)
        return len(text)

    def flush(self) -> None:
        if self.fh is not None:
            self.fh.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:  # Ray (parity --engine ray) and faulthandler ask for one; fd 1/2 point there too
        if self.fh is None:
            import io

            raise io.UnsupportedOperation("fileno")
        return self.fh.fileno()

    def close(self) -> None:  # logging.shutdown closes handlers' streams at exit; the file is ours to close
        pass

    @property
    def encoding(self) -> str:
        return "utf-8"


def _real_fd(stream, fd: int) -> bool:
    try:
        return stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def library_output_to(log_path: str | os.PathLike | None) -> Iterator[None]:
    """Send what TensorFlow, absl, XNNPACK, the converters and quantizers print to `log_path` (None: nowhere).

    Native code writes to fd 1/2 and Python libraries to sys.stdout/sys.stderr/warnings; all of those point
    at the log for the block, while edgeproof's own lines (written to TERMINAL) still reach the user's stderr.
    """
    from pathlib import Path

    target = os.devnull
    made: list[Path] = []  # the folders and the log this call created, undone if the block fails with nothing logged
    if log_path is not None:
        try:
            made = [d for d in (Path(log_path).parent, *Path(log_path).parent.parents) if not d.exists()][::-1]
            if not os.path.lexists(log_path):
                made.append(Path(log_path))
            Path(log_path).parent.mkdir(parents=True, exist_ok=True)
            target = str(log_path)
            fh = open(target, "a", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
        except OSError:
            target = os.devnull
    if target == os.devnull:
        fh = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    old_out, old_err = sys.stdout, sys.stderr
    saved: dict[int, int] = {}
    terminal = old_err
    try:
        for fd in (1, 2):
            saved[fd] = os.dup(fd)
            os.dup2(fh.fileno(), fd)
    except OSError:  # no real fds (embedded use): only the Python streams are redirected
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
        saved = {}
    if 2 in saved and _real_fd(old_err, 2):
        terminal = open(os.dup(saved[2]), "w", encoding=getattr(old_err, "encoding", None) or "utf-8",  # noqa: SIM115
                        errors="replace", buffering=1)
    sink = _Sink(fh)
    TERMINAL.stack.append(terminal)
    sys.stdout, sys.stderr = sink, sink
    failed = True
    try:
        yield
        failed = False
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        TERMINAL.stack.pop()
        with contextlib.suppress(Exception):
            fh.flush()
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
        if terminal is not old_err:
            with contextlib.suppress(Exception):
                terminal.flush()
                terminal.close()
        sink.fh = None
        fh.close()
        if failed and target != os.devnull:
            _undo(made)  # a refused command leaves no empty REPORT_DIR/library-output.log behind


def _undo(made: list) -> None:
    """Remove what library_output_to created (deepest first), as long as it is still empty."""
    for p in reversed(made):
        with contextlib.suppress(OSError):
            if p.is_dir():
                p.rmdir()  # only when empty
            elif p.stat().st_size == 0:
                p.unlink()


class _KeptLog:
    def __init__(self, path: str) -> None:
        self.path, self.keep = path, False


@contextlib.contextmanager
def kept_library_log(what: str) -> Iterator[_KeptLog]:
    """`library_output_to` a temp file that is deleted at the end unless the caller sets `.keep`."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix=f"edgeproof-{what}-", suffix=".log")
    os.close(fd)
    log = _KeptLog(path)
    try:
        with library_output_to(path):
            yield log
    finally:
        if not log.keep:
            with contextlib.suppress(OSError):
                os.unlink(path)
