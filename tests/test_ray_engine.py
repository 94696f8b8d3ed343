"""`--engine ray`: the same results as the local engine on the same folder (bad files and videos included), one
line when Ray is missing, flags checked before any work, and no Ray process or port left after a run.

Each Ray run starts a local 2-CPU Ray (several seconds on 2 cores), so the Ray runs are few, marked slow, and
run as real child processes in their own session: what they leave behind can be found by session id.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeproof.cli.main import run_cli

cv2 = pytest.importorskip("cv2")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from _runtime_models import LABELS, color_onnx, solid

RAY_RUN_TIMEOUT = 240  # a local Ray starts in 3-15 s here; the whole run is bounded well below the test limit
TEARDOWN_S = 20  # after the child exits, every Ray process it started is gone within this
TIMING_KEYS = {"seconds", "fps", "p50_ms", "p90_ms", "p99_ms", "p50_preprocess_ms", "latency_ms", "latency_p50_ms",
               "engine", "files"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> dict:
    """Good images across several Ray batches, a video (expanded to frames), and files that must be skipped."""
    root = tmp_path_factory.mktemp("ray")
    model = color_onnx(root / "model.onnx-fp32.onnx")
    imgs = root / "imgs"
    (imgs / "sub").mkdir(parents=True)
    for i in range(150):  # > 2 batches of ROWS_PER_TASK
        name = LABELS[i % 3]
        cv2.imwrite(str((imgs / "sub" if i % 5 == 0 else imgs) / f"{i:03d}_{name}.png"), solid(name))
    good = (imgs / "001_green.png").read_bytes()
    (imgs / "050_cut.png").write_bytes(good[:60])
    (imgs / "060_empty.jpg").write_bytes(b"")
    (imgs / "070_text.png").write_text("not a picture")
    (imgs / "090_broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 junk")
    os.symlink(imgs / "missing.png", imgs / "095_dangling.png")
    writer = cv2.VideoWriter(str(imgs / "100_clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (20, 24))
    for name in ("red", "green", "blue", "red"):
        writer.write(solid(name))
    writer.release()
    return {"root": root, "model": str(model), "imgs": str(imgs)}


def _cli(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeproof", *argv], capture_output=True, text=True,
                          timeout=RAY_RUN_TIMEOUT, env={**os.environ, **(env or {})}, start_new_session=True)


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _without_timings(obj):
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in TIMING_KEYS}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def _session_processes(sid: int, marker: str) -> list[str]:
    """Processes still in the child's session, or whose command line names its Ray session folder."""
    left = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
        if int(fields[3]) == sid or (marker and marker in cmd):
            left.append(f"{d.name}: {cmd[:160]}")
    return left


@pytest.fixture(scope="module")
def ray_run(folder) -> dict:
    """One `run --engine ray --workers 2 --json` in a child process, and what it left behind once it exited."""
    t0 = time.monotonic()
    child = subprocess.Popen([sys.executable, "-m", "edgeproof", "run", folder["model"], "--source", folder["imgs"],
                              "--engine", "ray", "--workers", "2", "--json"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = child.communicate(timeout=RAY_RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, 9)
        raise
    seconds = time.monotonic() - t0
    lines = _lines(out)
    engine = lines[-1]["summary"]["engine"] if lines and "summary" in lines[-1] else {}
    left = _left_after(child.pid, engine)
    return {"rc": child.returncode, "lines": lines, "stderr": err, "seconds": seconds, "engine": engine, "left": left}


def _left_after(pid: int, engine: dict) -> list[str]:
    """Ray processes of a finished child still alive after TEARDOWN_S (a worker that imported TensorFlow takes
    a few seconds to exit once its raylet is gone)."""
    deadline = time.monotonic() + TEARDOWN_S
    while (left := _session_processes(pid, engine.get("session_dir") or "")) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.mark.slow
def test_run_on_ray_gives_the_local_engines_lines_skips_and_summary(folder, ray_run):
    local = _cli("run", folder["model"], "--source", folder["imgs"], "--json")
    assert local.returncode == 3, local.stderr  # some inputs skipped
    assert ray_run["rc"] == 3, ray_run["stderr"]
    ours, theirs = _lines(local.stdout), ray_run["lines"]
    assert _without_timings(theirs) == _without_timings(ours)  # every line, in input order, same index and top-k
    summary = theirs[-1]["summary"]
    assert summary["count"] == 150 + 4  # images + the video's frames
    assert summary["skipped_by_reason"] == {
        "truncated PNG": 1, "zero-byte file": 1, "not an image (looks like text)": 1,
        "cannot open video (unsupported codec or corrupt file)": 1, "broken symlink (its target is missing)": 1}
    engine = ray_run["engine"]
    assert engine["name"] == "ray" and engine["actors"] == 2 and engine["started_here"]
    per_worker = engine["per_worker"]
    assert sum(w["count"] for w in per_worker) == summary["count"]
    assert sum(w["skipped"] for w in per_worker) == summary["skipped_total"]
    assert all(w["images_per_s"] > 0 for w in per_worker if w["count"])
    assert ray_run["stderr"].strip() == "", ray_run["stderr"]  # no Ray chatter around the JSON


@pytest.mark.slow
def test_a_ray_run_is_bounded_and_leaves_no_process_or_port(ray_run):
    assert ray_run["rc"] == 3, ray_run["stderr"]
    assert ray_run["seconds"] < RAY_RUN_TIMEOUT
    assert ray_run["left"] == [], ray_run["left"]  # no raylet, gcs_server, worker or agent outlives the run
    host, port = ray_run["engine"]["address"].rsplit(":", 1)
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex((host, int(port))) != 0, "the local Ray's GCS port is still open"


def test_engine_ray_without_ray_is_one_line_with_the_pip_command(folder, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert run_cli(["run", folder["model"], "--source", folder["imgs"], "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'edgeproof[ray]'" in err, err


@pytest.mark.parametrize("extra, message", [
    (["--address", "auto"], "--address applies to --engine ray only"),
    (["--workers", "2"], "--workers applies to --engine ray only"),
    (["--engine", "ray", "--workers", "0"], "--workers must be >= 1"),
    (["--engine", "ray", "--save", "out"], "--save needs the local engine"),
])
def test_engine_flags_are_checked_before_any_work(folder, capsys, extra, message):
    assert run_cli(["run", folder["model"], "--source", folder["imgs"], *extra]) == 2
    assert message in capsys.readouterr().err


def test_an_unreachable_cluster_is_one_line_within_seconds(folder, capsys):
    with socket.socket() as s:  # a port that surely refuses: bound, never listening
        s.bind(("127.0.0.1", 0))
        t = time.monotonic()
        assert run_cli(["run", folder["model"], "--source", folder["imgs"], "--engine", "ray", "--address",
                        f"127.0.0.1:{s.getsockname()[1]}"]) == 2
    assert time.monotonic() - t < 30  # Ray alone retries a wrong address for minutes
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("model: "), err  # the model line, then the one error line
    assert "cannot reach the Ray cluster at '127.0.0.1:" in err[1], err


def test_a_video_or_camera_stays_on_the_local_engine(folder, capsys):
    clip = str(Path(folder["imgs"]) / "100_clip.avi")
    assert run_cli(["run", folder["model"], "--source", clip, "--engine", "ray"]) == 2
    assert "--engine ray runs over files" in capsys.readouterr().err


def test_a_bad_model_fails_before_ray_starts(folder, tmp_path, capsys, monkeypatch):
    import edgeproof.scaleout.ray_cluster as cluster

    monkeypatch.setattr(cluster, "ray_session", lambda *a, **k: pytest.fail("Ray started for a bad model"))
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert run_cli(["run", str(bad), "--source", folder["imgs"], "--engine", "ray"]) == 2
    assert "bad.onnx" in capsys.readouterr().err


@pytest.mark.slow
def test_parity_on_ray_gives_the_local_report_and_gate(tiny_run, tiny_artifacts, tmp_path):
    pytest.importorskip("tensorflow")
    base = ["parity", str(tiny_run), "--artifacts", str(tiny_artifacts), "--json", "--no-triage"]
    local = _cli(*base, "-o", str(tmp_path / "local"))
    child = subprocess.Popen([sys.executable, "-m", "edgeproof", *base, "-o", str(tmp_path / "ray"), "--engine", "ray",
                              "--workers", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    out, err = child.communicate(timeout=RAY_RUN_TIMEOUT)
    assert child.returncode == local.returncode == 0, err + local.stderr
    ours, theirs = json.loads(local.stdout), json.loads(out)
    assert theirs["passed"] == ours["passed"] and theirs["failures"] == ours["failures"]  # the same gate
    assert _without_timings(theirs) == _without_timings(ours)  # every row, metric, failure and the e2e drift
    assert len(theirs["results"]) >= 7 and theirs["engine"]["name"] == "ray"
    assert _left_after(child.pid, theirs["engine"]) == []


@pytest.mark.slow
def test_parity_on_ray_refuses_an_unreadable_image_as_locally(tiny_run, tiny_artifacts, shapes_dir, tmp_path):
    pytest.importorskip("tensorflow")
    import shutil

    data = tmp_path / "data"
    for d in sorted(p for p in (shapes_dir / "test").iterdir() if p.is_dir()):
        (data / d.name).mkdir(parents=True)
        for p in sorted(d.iterdir())[:5]:
            shutil.copy(p, data / d.name)
    (data / d.name / "zz_cut.png").write_bytes(next((data / d.name).iterdir()).read_bytes()[:40])
    base = ["parity", str(tiny_run), "--artifacts", str(tiny_artifacts), "--data", str(data), "--backends",
            "onnxruntime", "--no-e2e", "--json", "-o", str(tmp_path / "out")]
    local, ray = _cli(*base), _cli(*base, "--engine", "ray", "--workers", "1")
    assert local.returncode == ray.returncode == 2, ray.stderr
    line = ray.stderr.strip().splitlines()[-1]
    assert "1 parity image(s) cannot be read" in line and "zz_cut.png: " in line, ray.stderr
    assert line == local.stderr.strip().splitlines()[-1]
