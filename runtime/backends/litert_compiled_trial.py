"""The guarded child of the litert-compiled backend: the parent's own load path, then two runs on zeros.

Damaged .tflite files SIGSEGV LiteRT CompiledModel where the Interpreter raises cleanly, so an unknown file is
compiled and run in a child first (runtime.guard). The child used to compile with num_threads=1 and run
buffers of zeros through its own few lines, while the parent compiled with num_threads=0 and read its specs
another way: a file could pass the child and crash the parent every time. Now the child builds the same
LiteRTCompiledBackend with the parent's threads, accelerators and fallback, and calls the same load
(`load_unguarded`: compile, specs, buffers) and `run` the parent calls.
"""

from __future__ import annotations

CODE = """
import sys
from edgeproof.runtime.backends.litert_compiled_trial import main
main(sys.argv[1], {threads!r}, {accelerators!r}, {allow_fallback!r})
"""


def code_for(threads: int | None, accelerators: list[str], allow_fallback: bool) -> str:
    return CODE.format(threads=threads, accelerators=list(accelerators), allow_fallback=bool(allow_fallback))


def main(path: str, threads: int | None, accelerators: list[str], allow_fallback: bool) -> None:
    import numpy as np

    from edgeproof.runtime.backends.litert_compiled import LiteRTCompiledBackend

    be = LiteRTCompiledBackend(path, threads=threads, providers=list(accelerators), allow_fallback=allow_fallback)
    try:
        be.load_unguarded()
        x = np.zeros(be._shape, np.dtype(be.input_spec.dtype))
        for _ in range(2):  # a damaged file does not crash LiteRT every time: twice catches more of them
            be.run(x)
    finally:
        be.close()
