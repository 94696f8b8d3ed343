"""`run --save` bookkeeping: output naming time for same-name vs distinct inputs, and memory per saved image.

    python benchmarks/save_naming.py [N]

Issue 17 measured 16k same-name inputs at 39 s against 20 s for distinct names (each name probed x_1, x_2, ...
from the start: quadratic) and 0.6 KB of RSS per image over 48k images. This times runtime.annotate._Names for
N inputs both ways, side by side, and measures (tracemalloc) what the Saver keeps per saved image.
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path


def main(n: int) -> None:
    from edgeproof.runtime.annotate import _Names

    def timed(names: list[str]) -> float:
        t = time.perf_counter()
        taker = _Names()
        for name in names:
            taker.take(name)
        return time.perf_counter() - t

    same = timed([f"/in/d{i}/photo.jpg" for i in range(n)])
    distinct = timed([f"/in/photo{i}.jpg" for i in range(n)])
    print(f"naming {n} inputs: same name {same * 1e3:.1f} ms, distinct {distinct * 1e3:.1f} ms, "
          f"ratio {same / distinct:.2f}x")
    tracemalloc.start()
    taker, written = _Names(), []
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        written.append(str(Path("/out") / taker.take(f"/in/photo{i}.jpg")))
    per = (tracemalloc.get_traced_memory()[0] - before) / n
    print(f"Saver bookkeeping: {per:.0f} B per saved image (the output names and the --json 'saved' list)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 48_000)
