"""Filter what native libraries print on file descriptor 2 (C++ log lines Python cannot configure).

TensorFlow's start-up banner and LiteRT's 'INFO: Created ... XNNPACK delegate' line are written by
C++ straight to fd 2. `filtered_stderr(keep)` points fd 2 at an in-memory file for the block, then
writes back every line `keep` accepts, so real errors and warnings still show.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def filtered_stderr(keep: Callable[[str], bool]) -> Iterator[None]:
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
