"""SIGTERM (systemd, docker stop, Kubernetes) stops `edgeproof run` on a camera as Ctrl-C does (issue 17):
summary printed, capture released, the --save video finalized, exit 143."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnxruntime")

_CHILD = r'''
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from _endless_camera import Endless
from _runtime_models import color_onnx
from edgeproof.cli import run as run_cmd
from edgeproof.cli.main import main, parse_args


seen = [0]
write = sys.stdout.write


def counting(text):  # READY after the 6th result row (by results: a live source may drop frames)
    n = write(text)
    if text.startswith('{"index"'):
        seen[0] += 1
        if seen[0] == 6:
            print("READY", file=sys.stderr, flush=True)
    return n


sys.stdout.write = counting
tmp = Path(sys.argv[2])
args = parse_args(["run", str(color_onnx(tmp / "c.onnx-fp32.onnx")), "--source", "0", "--json",
                   "--save", str(tmp / "out")])
real = run_cmd.run
args.func = lambda a: real(a, capture_factory=lambda t: Endless(0.005, sys.stderr))
sys.exit(main(args))
'''


def test_sigterm_stops_a_camera_run_with_summary_released_capture_and_a_finished_video(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(Path(__file__).parent), str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in child.stderr:
            if line.strip() == "READY":
                break
        child.send_signal(signal.SIGTERM)
        out, err = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 143, err
    assert "released" in err.splitlines()
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    assert summary["interrupted"] is True and summary["stopped"] == "terminated (SIGTERM)"
    assert summary["count"] >= 6
    video = cv2.VideoCapture(summary["saved"][0])
    frames = 0
    while video.read()[0]:
        frames += 1
    video.release()
    assert summary["saved"][0].endswith("annotated.mp4")  # renamed in place: the writer was closed
    # a readable, indexed video; the signal may land between a row's output and its frame being written
    assert summary["count"] - 1 <= frames <= summary["count"] and frames >= 5


def test_terminate_as_interrupt_restores_the_previous_handler():
    from edgeproof.runtime.stop_signals import Terminated, terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), terminate_as_interrupt():
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
    assert issubclass(Terminated, KeyboardInterrupt)  # every Ctrl-C path handles it
