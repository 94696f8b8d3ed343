"""Import TensorFlow without its C++ start-up banner on stderr.

TF 2.21 logs through absl before any Python code can configure it, so TF_CPP_MIN_LOG_LEVEL does not
silence 'WARNING: All log messages before absl::InitializeLog() ...' or the oneDNN notice. The first
import runs under `edgeproof.stderr_filter.filtered_stderr`, which writes back every line that is
not that banner, so real import errors and warnings still show.
"""

from __future__ import annotations

import os
import re
import sys

_BANNER = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\)"
                     r"|I\d{4} [\d:.]+\s+\d+ \S+\.cc:\d+\] )")


def drop_banner(text: str) -> str:
    """`text` without TensorFlow's start-up log lines (absl pre-init warning, I-level lines)."""
    keep = [ln for ln in text.splitlines() if ln.strip() and not _BANNER.match(ln)]
    return "".join(ln + "\n" for ln in keep)


def import_tensorflow(what: str = "this command"):
    """`import tensorflow` quietly; MissingDependency with the pip hint when it is not installed."""
    from edgeproof.errors import MissingDependency
    from edgeproof.stderr_filter import filtered_stderr

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if sys.modules.get("tensorflow") is not None:
        return sys.modules["tensorflow"]
    try:
        with filtered_stderr(lambda line: not _BANNER.match(line)):
            import tensorflow as tf
    except ImportError:
        raise MissingDependency("tensorflow", "train", what) from None
    return tf
