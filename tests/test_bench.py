import pytest

from enas.bench import run_benchmarks


@pytest.mark.parametrize("space", ["rnn", "macro", "micro"])
def test_benchmarks_run_and_report_ratios(space):
    (result,) = run_benchmarks([space], device="cpu", size="small", verbose=False, warmup=1, steps=1)
    assert result["space"] == space and result["supernet_vs_child_step"] > 0
    if space == "rnn":
        assert result["supernet_vs_lstm"] > 0
    if space == "micro":
        assert result["supernet_vs_cnn4"] > 0
