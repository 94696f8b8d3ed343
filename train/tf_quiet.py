"""Import TensorFlow without its C++ start-up banner on stderr.

TF 2.21 logs through absl before any Python code can configure it, so TF_CPP_MIN_LOG_LEVEL does not
silence 'WARNING: All log messages before absl::InitializeLog() ...' or the oneDNN notice. The first
import runs with file descriptor 2 pointed at a temp file; afterwards every line that is not that
banner is written back to stderr, so real import errors and warnings still show.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

_BANNER = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                     r"|I\d{4} [\d:.]+\s+\d+ \S+\.cc:\d+\] )")


def drop_banner(text: str) -> str:
    """`text` without TensorFlow's start-up log lines (absl pre-init warning, I-level lines)."""
    keep = [ln for ln in text.splitlines() if ln.strip() and not _BANNER.match(ln)]
    return "".join(ln + "\n" for ln in keep)


def import_tensorflow(what: str = "this command"):
    """`import tensorflow` quietly; MissingDependency with the pip hint when it is not installed."""
    from edgeproof.errors import MissingDependency

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if sys.modules.get("tensorflow") is not None:
        return sys.modules["tensorflow"]
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded use): import as is
        saved = None
    tmp = tempfile.TemporaryFile() if saved is not None else None
    try:
        if tmp is not None:
            os.dup2(tmp.fileno(), 2)
        import tensorflow as tf
    except ImportError:
        raise MissingDependency("tensorflow", "train", what) from None
    finally:
        if tmp is not None:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            rest = drop_banner(tmp.read().decode(errors="replace"))
            tmp.close()
            if rest:
                sys.stderr.write(rest)
                sys.stderr.flush()
    return tf
