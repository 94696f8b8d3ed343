"""The inference time bound: a model that never returns ends `edgeproof run` with one line (exit 2), not a hang."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from edgeproof.runtime.watchdog import Watchdog


def _dog(limit: float = 5.0):
    now = [0.0]
    fired: list[tuple[str, float]] = []
    event = threading.Event()

    def on_timeout(what: str, seconds: float) -> None:
        fired.append((what, seconds))
        event.set()

    return Watchdog(limit, on_timeout, clock=lambda: now[0]), now, fired, event


def test_a_call_over_the_limit_fires_once_with_its_input_name():
    dog, now, fired, event = _dog()
    with dog:
        with dog.watch("cat.jpg"):
            now[0] = 5.5  # the (fake) clock moves past the limit while the call is still running
            assert event.wait(5.0)
            now[0] = 50.0
            event.clear()
            assert not event.wait(0.6)  # fires once, not on every tick
    assert fired == [("cat.jpg", 5.0)]


def test_calls_within_the_limit_and_time_between_calls_never_fire():
    dog, now, fired, event = _dog()
    with dog:
        for i in range(3):
            with dog.watch(f"img{i}.png"):
                now[0] += 4.9
        now[0] += 1000.0  # idle between calls (a slow camera) is not inference time
        assert not event.wait(0.6)
    assert fired == []


def test_the_limit_must_be_positive():
    with pytest.raises(ValueError, match="> 0 seconds"):
        Watchdog(0, lambda what, s: None)


def test_infer_timeout_flag_is_checked(tmp_path, capsys):
    from edgeproof.cli.main import run_cli

    for bad in ("-1", "nan", "inf"):
        assert run_cli(["run", str(tmp_path / "m.tflite"), str(tmp_path), "--infer-timeout", bad]) == 2
        assert "--infer-timeout must be a number of seconds >= 0" in capsys.readouterr().err


@pytest.fixture(scope="module")
def looping_tflite(tmp_path_factory):
    """A 16x16 'classifier' whose WHILE loop never ends (its condition is true for any image)."""
    pytest.importorskip("tensorflow")
    root = tmp_path_factory.mktemp("loop")
    code = (
        "import os, sys\nos.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\nimport tensorflow as tf\n"
        "@tf.function(input_signature=[tf.TensorSpec([1, 16, 16, 3], tf.float32, name='image')])\n"
        "def f(x):\n"
        "    cond = lambda i, y: tf.reduce_sum(y) > -1.0\n"
        "    body = lambda i, y: (i + 1.0, y * 1.0)\n"
        "    _, y = tf.while_loop(cond, body, [tf.constant(0.0), x])\n"
        "    return tf.nn.softmax(tf.reduce_mean(y, axis=[1, 2]))\n"
        "conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)\n"
        "open(sys.argv[1], 'wb').write(conv.convert())\n")
    model = root / "loop.tflite"
    subprocess.run([sys.executable, "-c", code, str(model)], check=True, capture_output=True, timeout=300)
    import cv2
    import numpy as np

    cv2.imwrite(str(root / "img.png"), np.full((16, 16, 3), 100, np.uint8))
    return model, root / "img.png"


@pytest.mark.slow
def test_a_model_that_loops_forever_ends_the_run_with_one_line(looping_tflite):
    model, img = looping_tflite
    r = subprocess.run([sys.executable, "-m", "edgeproof", "run", str(model), str(img), "--infer-timeout", "1"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edgeproof: error:")]
    assert len(errors) == 1 and "inference on" in errors[0] and "did not finish within 1 s" in errors[0]
    assert "Traceback" not in r.stderr
