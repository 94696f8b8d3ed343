#!/usr/bin/env bash
# Load every .tflite in a folder with the legacy tflite-runtime 2.14 (the last wheel; needs numpy<2),
# in its own venv, and run one inference on each. Prints one line per file: ok/fail + the reason.
#
#   benchmarks/legacy_tflite_runtime.sh ARTIFACT_DIR [VENV_DIR]
#
# VENV_DIR defaults to $EDGEPROOF_LEGACY_VENV or ~/.cache/edgeproof/legacy-tflite-venv and is created
# on first use (python3.8-3.11: tflite-runtime 2.14 has no wheel for newer Pythons; set PYTHON=...).
# Export EDGEPROOF_LEGACY_VENV=VENV_DIR afterwards and 'edgeproof inspect' / the 'legacy' tests use it.
# Exit status: 0 all loaded, 1 any failed, 2 bad usage.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
  [[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]] && exit 0 || exit 2
fi
DIR=$1
VENV=${2:-${EDGEPROOF_LEGACY_VENV:-$HOME/.cache/edgeproof/legacy-tflite-venv}}
PY=${PYTHON:-python3}
if [[ ! -d "$DIR" ]]; then echo "error: '$DIR' is not a folder of .tflite files" >&2; exit 2; fi

if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import tflite_runtime" 2>/dev/null; then
  echo "making legacy venv at $VENV (tflite-runtime==2.14.0, numpy<2) with $PY" >&2
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q 'tflite-runtime==2.14.0' 'numpy<2'
fi

"$VENV/bin/python" - "$DIR" <<'PYEOF'
import sys
from pathlib import Path

import numpy as np
import tflite_runtime
from tflite_runtime.interpreter import Interpreter

files = sorted(Path(sys.argv[1]).glob("*.tflite"))
print(f"tflite-runtime {tflite_runtime.__version__}, numpy {np.__version__}: {len(files)} file(s) in {sys.argv[1]}")
failed = 0
for f in files:
    try:
        it = Interpreter(model_path=str(f))
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        it.invoke()
        y = it.get_tensor(it.get_output_details()[0]["index"])
        print(f"ok    {f.name}  output {tuple(y.shape)} {y.dtype}")
    except Exception as exc:  # report every file, then fail
        failed += 1
        msg = " | ".join(ln.strip() for ln in str(exc).strip().splitlines() if ln.strip())[:300]
        print(f"FAIL  {f.name}  {type(exc).__name__}: {msg}")
if not files:
    print("no .tflite files found")
    sys.exit(2)
sys.exit(1 if failed else 0)
PYEOF
