"""The progress bar: redrawn a few times a second at most, reading tensor stats only when it draws."""

from __future__ import annotations

import io

import torch

from enas.runs.progress import Progress


class CountingTensor(torch.Tensor):
    reads = 0

    def __float__(self):
        CountingTensor.reads += 1
        return super().__float__()


def test_the_bar_reads_tensor_stats_only_when_it_redraws(monkeypatch):
    stream = io.StringIO()
    bar = Progress(enabled=True, stream=stream)
    now = [0.0]
    monkeypatch.setattr("enas.runs.progress.time.perf_counter", lambda: now[0])
    bar.start("epoch 1/1 shared", 100)
    loss = torch.tensor(2.5).as_subclass(CountingTensor)
    for step in range(1, 101):
        now[0] = step * 0.01  # 100 steps in one second: about four redraws
        bar.update(step, {"loss": loss, "acc": 0.5, "note": "text"})
    assert 3 <= CountingTensor.reads <= 6 < 100
    assert stream.getvalue().count("\r") == CountingTensor.reads
    assert "100/100" in stream.getvalue() and "loss 2.5 acc 0.5" in stream.getvalue()
    bar.end()
    silent = Progress(enabled=False, stream=io.StringIO())
    silent.start("x", 10)
    silent.update(5, {"loss": loss})
    silent.line("kept")
    assert silent.stream.getvalue() == "kept\n"
