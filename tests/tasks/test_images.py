"""The image-classification task: splits, normalisation, augmentation, loss, reward, evaluation, checkpointing."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from enas.errors import ConfigError
from enas.tasks.datasets.images import ImageDataset
from enas.tasks.images import (
    PAD,
    AugmentParams,
    ImageClassificationTask,
    ImageTaskConfig,
    channel_stats,
    gather_batch,
    sample_augment,
)

N_TRAIN, N_TEST, SIZE, K = 50, 12, 8, 4


def make_dataset(n_train: int = N_TRAIN, n_test: int = N_TEST, channels: int = 3, seed: int = 0) -> ImageDataset:
    """Random images whose pixel (0, 0, 0) holds the example's index, so batches can be traced back."""
    g = torch.Generator().manual_seed(seed)
    train = torch.randint(0, 256, (n_train, channels, SIZE, SIZE), generator=g, dtype=torch.uint8)
    train[:, 0, 0, 0] = torch.arange(n_train, dtype=torch.uint8)
    test = torch.randint(0, 256, (n_test, channels, SIZE, SIZE), generator=g, dtype=torch.uint8)
    return ImageDataset(
        train_images=train,
        train_labels=torch.arange(n_train) % K,
        test_images=test,
        test_labels=torch.arange(n_test) % K,
        num_classes=K,
        class_names=[str(i) for i in range(K)],
        name="tiny",
    )


def make_task(seed: int = 0, dataset: ImageDataset | None = None, **overrides) -> ImageClassificationTask:
    cfg = ImageTaskConfig(**{"valid_size": 10, "batch_size": 8, "eval_batch_size": 5, "reward_batch_size": 4,
                             **overrides})  # fmt: skip
    return ImageClassificationTask(cfg, seed=seed, dataset=dataset or make_dataset())


def normalised(task: ImageClassificationTask, images: torch.Tensor) -> torch.Tensor:
    """Reference normalisation, written out."""
    return (images.float() / 255 - task.mean.view(1, -1, 1, 1)) / task.std.view(1, -1, 1, 1)


def traced_index(task: ImageClassificationTask, x: torch.Tensor) -> list[int]:
    """Example indices from pixel (0, 0, 0) of normalised, un-augmented images."""
    return torch.round((x[:, 0, 0, 0] * task.std[0] + task.mean[0]) * 255).long().tolist()


def params(dy, dx, flip, cut_y=None, cut_x=None) -> AugmentParams:
    t = lambda v: torch.tensor(v, dtype=torch.int64)  # noqa: E731
    zeros = [0] * len(dy)
    return AugmentParams(t(dy), t(dx), torch.tensor(flip), t(cut_y or zeros), t(cut_x or zeros))


# -------------------------------------------------------------------------------------------- splits, statistics


def test_info_and_splits():
    task = make_task(train_subset=40, test_subset=7)
    assert (task.info.in_channels, task.info.image_size, task.info.num_classes) == (3, SIZE, K)
    assert [task.split_size(s) for s in ("train", "valid", "test")] == [30, 10, 7]
    # validation = the LAST valid_size images of the (subset of the) training set
    valid_ids = set()
    for _ in range(5):
        x, y = task.reward_batch()
        assert x.shape == (4, 3, SIZE, SIZE)
        valid_ids.update(traced_index(task, x))
    assert valid_ids == set(range(30, 40))
    task_plain = make_task(train_subset=40, augment=False)
    seen = sum((traced_index(task_plain, x) for x, _ in task_plain.train_batches()), [])
    assert sorted(seen) == list(range(30))  # every training image exactly once per epoch, none from validation
    assert task_plain.num_train_batches() == math.ceil(30 / 8) == len(list(task_plain.train_batches()))


def test_normalisation_uses_training_part_only():
    data = make_dataset()
    data.train_images[-10:] = 255  # validation part: would shift the statistics if included
    task = make_task(dataset=data)
    train = data.train_images[:-10].double() / 255
    assert torch.allclose(task.mean.double(), train.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(task.std.double(), train.std(dim=(0, 2, 3), unbiased=False), atol=1e-6)
    x, _ = task.reward_batch()  # not augmented: the constant validation images, normalised with training stats
    expected = ((1 - task.mean) / task.std).view(1, 3, 1, 1).expand_as(x)
    assert torch.allclose(x, expected, atol=1e-5)
    mean, std = channel_stats(data.train_images[:-10], chunk=7)  # chunking does not change the result
    assert torch.allclose(mean, task.mean) and torch.allclose(std, task.std)


def test_constant_channel_does_not_give_nan():
    mean, std = channel_stats(torch.full((3, 2, 4, 4), 7, dtype=torch.uint8))
    assert torch.allclose(mean, torch.full((2,), 7 / 255)) and torch.equal(std, torch.full((2,), 1 / 255))


def test_config_errors():
    with pytest.raises(ConfigError, match="valid_size"):
        make_task(valid_size=N_TRAIN)
    with pytest.raises(ConfigError, match="cutout_anchor"):
        make_task(cutout_anchor="middle")
    with pytest.raises(ConfigError, match="batch_size"):
        make_task(batch_size=0)
    with pytest.raises(ConfigError, match="train_subset"):
        make_task(train_subset=0)
    task = make_task(valid_size=0)
    assert task.split_size("train") == N_TRAIN and task.split_size("valid") == 0
    with pytest.raises(ConfigError, match="valid_size=0"):
        task.reward_batch()
    with pytest.raises(ConfigError, match="valid_size=0"):
        task.evaluate(nn.Identity(), "valid")


# ------------------------------------------------------------------------------------------------- augmentation


def _setup_gather():
    task = make_task()
    images = task._x["train"]
    return task, images, lambda idx, aug, cutout=0: gather_batch(images, idx, task._shift, task._scale, aug, cutout)


def test_crop_is_a_window_of_the_zero_padded_normalised_image():
    task, images, gather = _setup_gather()
    idx = torch.tensor([3, 0, 7, 7, 12])
    dy, dx = [0, 8, 4, 1, 6], [8, 0, 4, 7, 2]
    out = gather(idx, params(dy, dx, [False] * 5))
    padded = F.pad(normalised(task, images[idx]), (PAD,) * 4)  # zero padding after normalisation
    for b in range(5):
        assert torch.allclose(out[b], padded[b, :, dy[b] : dy[b] + SIZE, dx[b] : dx[b] + SIZE], atol=1e-5)
    flipped = gather(idx, params(dy, dx, [True] * 5))  # crop, then flip
    for b in range(5):
        window = padded[b, :, dy[b] : dy[b] + SIZE, dx[b] : dx[b] + SIZE]
        assert torch.allclose(flipped[b], window.flip(-1), atol=1e-5)


def test_flip_exactly_the_chosen_examples():
    task, images, gather = _setup_gather()
    idx = torch.arange(6)
    flip = [True, False, False, True, True, False]
    out = gather(idx, params([PAD] * 6, [PAD] * 6, flip))
    ref = normalised(task, images[idx])
    for b in range(6):
        assert torch.allclose(out[b], ref[b].flip(-1) if flip[b] else ref[b], atol=1e-5)
        assert not torch.allclose(out[b], ref[b].flip(-1) if not flip[b] else ref[b], atol=1e-5)


@pytest.mark.parametrize("cut_y, cut_x", [(2, 3), (6, 6), (-2, 0), (0, 7)])
def test_cutout_zeroes_the_expected_square_clipped_at_borders(cut_y, cut_x):
    task, images, gather = _setup_gather()
    idx = torch.tensor([4, 5])
    c = 4
    out = gather(idx, params([PAD] * 2, [PAD] * 2, [False] * 2, [cut_y, 0], [cut_x, 0]), cutout=c)
    ref = normalised(task, images[idx])
    expected_mask = torch.ones(SIZE, SIZE, dtype=torch.bool)
    for i in range(SIZE):
        for j in range(SIZE):
            if cut_y <= i < cut_y + c and cut_x <= j < cut_x + c:
                expected_mask[i, j] = False
    assert torch.allclose(out[0], ref[0] * expected_mask, atol=1e-5)
    assert (out[0][:, ~expected_mask] == 0).all()
    second = torch.ones(SIZE, SIZE, dtype=torch.bool)
    second[:c, :c] = False
    assert torch.allclose(out[1], ref[1] * second, atol=1e-5)


def test_sampled_parameters_and_shapes():
    g = torch.Generator().manual_seed(3)
    aug = sample_augment(2000, SIZE, 4, "corner", g, torch.device("cpu"))
    assert aug.dy.min() == 0 and aug.dy.max() == 2 * PAD and aug.dx.min() == 0 and aug.dx.max() == 2 * PAD
    assert 0.45 < aug.flip.float().mean() < 0.55
    assert aug.cut_y.min() == 0 and aug.cut_y.max() == SIZE - 1
    centre = sample_augment(2000, SIZE, 4, "centre", g, torch.device("cpu"))
    assert centre.cut_x.min() == -2 and centre.cut_x.max() == SIZE - 3
    task = make_task(cutout=3)
    x, y = next(iter(task.train_batches()))
    assert x.shape == (8, 3, SIZE, SIZE) and x.dtype == torch.float32 and y.shape == (8,)
    assert torch.isfinite(x).all()


def test_cutout_without_augment_only_cuts():
    task = make_task(augment=False, cutout=3)
    x, _ = next(iter(task.train_batches()))
    cut = (x == 0).all(dim=1)  # (B, S, S)
    assert (cut.flatten(1).sum(1) >= 1).all() and (cut.flatten(1).sum(1) <= 9).all()
    originals = normalised(task, task._x["train"])
    for b in range(x.shape[0]):  # outside the square: the un-shifted, un-flipped original image
        assert any(torch.allclose(x[b][:, ~cut[b]], r[:, ~cut[b]], atol=1e-5) for r in originals)


# ----------------------------------------------------------------------------------------------- loss, metrics


class KnownModel(nn.Module):
    """Logits favour class (example's label + shift) % K with a known margin; records the archs it was given."""

    def __init__(self, task: ImageClassificationTask, split: str, wrong: set[int], aux: bool = False):
        super().__init__()
        self.task, self.split, self.wrong, self.aux = task, split, wrong, aux
        self.archs: list = []
        self.bias = nn.Parameter(torch.zeros(K))

    def forward(self, x, arch=None):
        self.archs.append(arch)
        ref = normalised(self.task, self.task._x[self.split])  # identify each row among the split's images
        rows = torch.cdist(x.flatten(1), ref.flatten(1)).argmin(dim=1)
        target = self.task._y[self.split][rows]
        shift = torch.tensor([1 if int(r) in self.wrong else 0 for r in rows])
        logits = 2.0 * F.one_hot((target + shift) % K, K).float() + self.bias
        return logits, (logits * 0.5 if self.aux else None)


def test_evaluate_with_known_outputs():
    task = make_task()
    model = KnownModel(task, "test", wrong={0, 5, 11})
    calls = iter(range(100))
    out = task.evaluate(model, "test", arch_fn=lambda: next(calls))
    assert out["n"] == N_TEST and out["acc"] == pytest.approx(9 / 12) and out["score"] == out["acc"]
    right = -torch.log_softmax(torch.tensor([2.0, 0, 0, 0]), 0)[0].item()
    wrong = right + 2.0  # the true class's logit is 0 instead of 2
    assert out["loss"] == pytest.approx((9 * right + 3 * wrong) / 12, rel=1e-5)
    assert model.archs == [0, 1, 2]  # arch_fn once per chunk of eval_batch_size=5: 12 images -> 3 chunks
    model.archs.clear()
    task.evaluate(model, "valid")
    assert model.archs == [None, None]


def test_reward_is_accuracy_on_an_unaugmented_validation_batch():
    task = make_task(reward_batch_size=10)
    x, y = task.reward_batch()
    model = KnownModel(task, "valid", wrong={1, 2, 3})
    assert task.reward(model, (x, y), arch="a") == pytest.approx(0.7)
    assert model.archs == ["a"]


def test_shared_loss_with_and_without_aux():
    task = make_task(aux_weight=0.4)
    batch = next(iter(task.train_batches()))
    x, y = batch
    plain = nn.Linear(3 * SIZE * SIZE, K)
    model = lambda inp, arch=None: (plain(inp.flatten(1)), None)  # noqa: E731
    loss, stats = task.shared_loss(model, batch)
    logits = plain(x.flatten(1))
    assert loss.item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert set(stats) == {"loss", "acc"} and stats["acc"] == pytest.approx((logits.argmax(1) == y).float().mean())
    aux_head = nn.Linear(3 * SIZE * SIZE, K)
    with_aux = lambda inp, arch=None: (plain(inp.flatten(1)), aux_head(inp.flatten(1)))  # noqa: E731
    loss, stats = task.shared_loss(with_aux, batch)
    expected = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux_head(x.flatten(1)), y)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert stats["loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6) and "aux_loss" in stats
    loss.backward()
    assert aux_head.weight.grad is not None and plain.weight.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------- checkpointing


def _stream(task: ImageClassificationTask, train_steps: int, rewards: int) -> list[torch.Tensor]:
    """Up to ``train_steps`` training batches (crossing epoch ends), then ``rewards`` reward batches."""
    out = []
    while len(out) < train_steps:
        for x, _ in task.train_batches():
            out.append(x)
            if len(out) == train_steps:
                break
    return out + [task.reward_batch()[0] for _ in range(rewards)]


@pytest.mark.parametrize("consumed", [0, 2, 5, 7])  # fresh, mid-epoch, exactly one epoch (5 batches), later
def test_state_dict_round_trip_reproduces_batches(consumed):
    a = make_task(seed=11, cutout=3)
    _stream(a, consumed, 3)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    expected = _stream(a, 8, 6)

    b = make_task(seed=999, cutout=3)  # a different seed: everything must come from the state
    buffer.seek(0)
    b.load_state_dict(torch.load(buffer))
    got = _stream(b, 8, 6)
    assert len(got) == len(expected) and all(torch.equal(g, e) for g, e in zip(got, expected))
    other = make_task(seed=999, cutout=3)
    assert not torch.equal(_stream(other, 1, 0)[0], expected[0])


def test_seeds_and_split_mismatch():
    assert torch.equal(_stream(make_task(seed=5), 3, 2)[-1], _stream(make_task(seed=5), 3, 2)[-1])
    with pytest.raises(ConfigError, match="same dataset"):
        make_task(valid_size=5).load_state_dict(make_task().state_dict())
