"""parity's PNG plots drawn from a synthetic report (no TensorFlow, no artifacts)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


def _row(name, acc, lat, status):
    task = SimpleNamespace(accuracy=acc, top1_agreement=acc)
    return SimpleNamespace(artifact=name, backend="litert", status=status, size_bytes=40_000,
                           latency_p50_ms=lat, comparison=SimpleNamespace(task=task))


def test_accuracy_latency_legend_never_covers_a_marker(tmp_path, monkeypatch):
    """A failing artifact sits low and slow (bottom right): the legend used to hide it there."""
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeproof.parity.report import plot_acc_latency

    rows = [_row("model.tflite-fp32.tflite", 0.714, 0.01, "pass"), _row("model.onnx-int8.onnx", 0.143, 0.14, "fail"),
            _row("model.tflite-int8.tflite", 0.143, 0.11, "fail")]
    report = SimpleNamespace(rows=rows, labelled=True, reference={"accuracy": 0.714, "latency_p50_ms": 3.7})
    figs = []
    real_close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    assert plot_acc_latency(report, tmp_path / "a.png").stat().st_size > 1000
    (fig,) = figs
    ax = fig.axes[0]
    fig.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    points = ax.transData.transform([(r.latency_p50_ms, r.comparison.task.accuracy * 100) for r in rows])
    assert not any(legend.contains(x, y) for x, y in points)
    assert not legend.overlaps(ax.get_window_extent())
    real_close(fig)
