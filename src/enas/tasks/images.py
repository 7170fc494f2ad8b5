"""Image classification as an ENAS task: device-resident data, batched augmentation, loss, reward, evaluation.

The pipeline follows the authors' CIFAR-10 code (spec 8.5):

* validation = the **last** ``valid_size`` training images (not a random subset); the test split never feeds the
  reward;
* pixels are scaled to [0, 1] and normalised per channel with the mean / standard deviation (population, ddof 0) of
  the training part only (validation excluded), applied to every split;
* training batches are augmented: zero padding of 4 *after* normalisation, a random crop back to the original size,
  a random horizontal flip and, optionally, cutout (a ``c x c`` square set to 0 whose top-left corner is uniform
  over the image, clipped at the borders); validation, test and reward batches are not augmented.

Images stay on the device as uint8 (a quarter of the memory of floats); a training batch is the batch's rows
indexed out of the uint8 tensor and rearranged by one gather (crop and flip are folded into its indices), then
normalised and masked (padding, cutout) as float.
All randomness comes from one private CPU ``torch.Generator``, checkpointed by `state_dict`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from enas.errors import ConfigError
from enas.spaces.base import TaskInfo
from enas.spaces.ops import channels_last
from enas.tasks.base import ClassificationTask, sharded_accuracy
from enas.tasks.datasets.images import ImageDataset, load_image_dataset

PAD = 4  # zero padding before the random crop (authors' code)
CUTOUT_ANCHORS = ("corner", "centre")


@dataclass
class ImageTaskConfig:
    """Data and batching of an image-classification task (see the module docstring for the pipeline)."""

    dataset: str = "cifar10"  # "cifar10" | "fashion-mnist" | path of a .npz
    root: str | None = None  # where the dataset lies (None: cache dir / system dir, downloading if needed)
    url: str | None = None  # download URL (CIFAR-10) or base URL (Fashion-MNIST)
    cache_dir: str | None = None
    valid_size: int = 5000  # the last valid_size training images; 0 = train on all (no valid split)
    batch_size: int = 128
    eval_batch_size: int = 500
    reward_batch_size: int = 128
    augment: bool = True  # pad 4 + random crop + horizontal flip on training batches
    cutout: int = 0  # side of the cutout square; 0 = off
    cutout_anchor: str = "corner"  # "corner": top-left uniform (authors' code); "centre": centre uniform
    aux_weight: float = 0.4  # weight of the auxiliary head's loss, when the model returns aux logits
    train_subset: int | None = None  # keep the first N training images (before the split); for demos and tests
    test_subset: int | None = None  # keep the first N test images

    def validate(self) -> None:
        """Raise ConfigError on the first bad value."""
        check_image_config(self)


def check_image_config(cfg: ImageTaskConfig) -> None:
    for key in ("batch_size", "eval_batch_size", "reward_batch_size"):
        if not isinstance(getattr(cfg, key), int) or getattr(cfg, key) < 1:
            raise ConfigError(f"{key} must be a positive integer, got {getattr(cfg, key)!r}")
    for key in ("valid_size", "cutout"):
        if not isinstance(getattr(cfg, key), int) or getattr(cfg, key) < 0:
            raise ConfigError(f"{key} must be an integer >= 0, got {getattr(cfg, key)!r}")
    for key in ("train_subset", "test_subset"):
        value = getattr(cfg, key)
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{key} must be a positive integer or null, got {value!r}")
    if cfg.cutout_anchor not in CUTOUT_ANCHORS:
        raise ConfigError(f"cutout_anchor must be one of {', '.join(CUTOUT_ANCHORS)}, got {cfg.cutout_anchor!r}")
    if cfg.aux_weight < 0:
        raise ConfigError(f"aux_weight must be >= 0, got {cfg.aux_weight}")


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and population std (ddof 0) of uint8 images (N, C, H, W) on the [0, 1] scale.

    Computed exactly from per-channel histograms of the 256 pixel values, in chunks of images (no float copy of
    the data set). A constant channel gets std 1/255 (i.e. 1 on the pixel scale) so that normalising it gives 0,
    not NaN."""
    chans = images.shape[1]
    counts = torch.zeros(chans, 256, dtype=torch.int64, device=images.device)  # (C, 256)
    for start in range(0, images.shape[0], chunk):
        pixels = images[start : start + chunk].transpose(0, 1).reshape(chans, -1)  # (C, b*H*W)
        for c in range(chans):
            counts[c] += torch.bincount(pixels[c], minlength=256)
    values = torch.arange(256, dtype=torch.float64, device=images.device)  # (256,)
    total = counts.sum(dim=1).double()  # (C,)
    mean = (counts * values).sum(dim=1) / total
    std = ((counts * (values - mean[:, None]).square()).sum(dim=1) / total).sqrt()
    std = torch.where(std > 1e-3, std, torch.ones_like(std))
    return (mean / 255).float(), (std / 255).float()


@dataclass
class AugmentParams:
    """Random choices for one batch of B images (all (B,) int64 / bool tensors on the data's device).

    dy, dx: top-left corner of the crop window in the padded image, in [0, 2 * pad].
    flip: whether the example is mirrored horizontally (after the crop).
    cut_y, cut_x: top-left corner of the cutout square in output coordinates (may lie partly outside the image).
    """

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor
    cut_y: torch.Tensor
    cut_x: torch.Tensor


def sample_augment(
    batch: int, size: int, cutout: int, anchor: str, generator: torch.Generator, device: torch.device
) -> AugmentParams:
    """Draw the crop offsets, flips and cutout corners of one batch with ``generator`` (one host-to-device copy)."""
    draws = torch.empty(5, batch, dtype=torch.int64)
    draws[:2] = torch.randint(0, 2 * PAD + 1, (2, batch), generator=generator)  # crop offsets
    draws[2] = torch.randint(0, 2, (batch,), generator=generator)  # flips
    if cutout > 0:
        draws[3:] = torch.randint(0, size, (2, batch), generator=generator)
        if anchor == "centre":  # the drawn point is the square's centre
            draws[3:] -= cutout // 2
    else:
        draws[3:] = 0
    draws = draws.to(device, non_blocking=True)
    return AugmentParams(draws[0], draws[1], draws[2].bool(), draws[3], draws[4])


def gather_batch(
    images: torch.Tensor,
    idx: torch.Tensor | slice,
    shift: torch.Tensor,
    scale: torch.Tensor,
    aug: AugmentParams | None = None,
    cutout: int = 0,
) -> torch.Tensor:
    """Images ``idx`` of uint8 ``images`` (N, C, S, S) -> normalised float (B, C, S, S), augmented if ``aug``
    (``idx``: an index tensor, or a slice when not augmenting).

    Normalisation is ``x * scale + shift`` with (1, C, 1, 1) tensors (scale = 1 / (255 std), shift = -mean / std).
    The batch is indexed out of ``images`` and then, with ``aug``, rearranged by one gather over the flattened
    pixels (both on uint8, before the float conversion). The output pixel (i, j) of example b is the pixel
    (dy + i, dx + j') of its image zero-padded by `PAD` (j' = S - 1 - j when flipped), i.e. crop-then-flip; source
    indices outside the image are clamped for the gather and the result is masked to 0 there, which is zero
    padding applied after normalisation. Cutout zeroes rows [cut_y, cut_y + cutout) x columns
    [cut_x, cut_x + cutout) of the output, clipped at the borders.
    """
    if aug is None:
        return channels_last(images[idx].float() * scale + shift)  # (B, C, S, S)
    size = images.shape[-1]
    ar = torch.arange(size, device=images.device)  # (S,)
    rows = aug.dy[:, None] - PAD + ar  # (B, S) source row of each output row
    cols = torch.where(aug.flip[:, None], size - 1 - ar, ar) + aug.dx[:, None] - PAD  # (B, S) source column
    batch, chans = idx.shape[0], images.shape[1]
    # Flat source pixel of every output pixel, shared by the channels; clamped indices are masked below.
    source = rows.clamp(0, size - 1)[:, :, None] * size + cols.clamp(0, size - 1)[:, None, :]  # (B, S, S)
    x = images[idx].view(batch, chans, size * size)  # (B, C, S*S) uint8: the batch's rows of the data
    x = x.gather(2, source.view(batch, 1, size * size).expand(-1, chans, -1)).view(batch, chans, size, size)
    keep = ((rows >= 0) & (rows < size))[:, :, None] & ((cols >= 0) & (cols < size))[:, None, :]  # (B, S, S)
    if cutout > 0:
        in_rows = (ar >= aug.cut_y[:, None]) & (ar < aug.cut_y[:, None] + cutout)  # (B, S)
        in_cols = (ar >= aug.cut_x[:, None]) & (ar < aug.cut_x[:, None] + cutout)  # (B, S)
        keep &= ~(in_rows[:, :, None] & in_cols[:, None, :])
    return channels_last((x.float() * scale + shift) * keep[:, None])  # (B, C, S, S)


class ImageClassificationTask(ClassificationTask):
    """Image classification: cross-entropy (+ weighted auxiliary head) for the shared weights, validation-minibatch
    accuracy as the controller's reward, accuracy over a whole split for evaluation."""

    def __init__(
        self, cfg: ImageTaskConfig, device: str | torch.device = "cpu", seed: int = 0,
        dataset: ImageDataset | None = None,
    ) -> None:  # fmt: skip
        cfg.validate()
        self.cfg = cfg
        self.device = torch.device(device)
        data = dataset if dataset is not None else load_image_dataset(cfg.dataset, cfg.root, cfg.url, cfg.cache_dir)
        self.dataset_name = data.name
        self.class_names = list(data.class_names)

        x, y = data.train_images, data.train_labels
        if cfg.train_subset is not None:
            x, y = x[: cfg.train_subset], y[: cfg.train_subset]
        if cfg.valid_size >= x.shape[0]:
            raise ConfigError(
                f"valid_size={cfg.valid_size} leaves no training images ({x.shape[0]} available); lower valid_size"
            )
        test_x, test_y = data.test_images, data.test_labels
        if cfg.test_subset is not None:
            test_x, test_y = test_x[: cfg.test_subset], test_y[: cfg.test_subset]
        cut = x.shape[0] - cfg.valid_size
        splits = {"train": (x[:cut], y[:cut]), "valid": (x[cut:], y[cut:]), "test": (test_x, test_y)}
        self._x = {k: v[0].contiguous().to(self.device) for k, v in splits.items()}  # uint8 (N, C, S, S)
        self._y = {k: v[1].contiguous().to(self.device) for k, v in splits.items()}  # int64 (N,)

        self.info = TaskInfo(in_channels=x.shape[1], image_size=x.shape[2], num_classes=data.num_classes)
        self.mean, self.std = channel_stats(self._x["train"])  # (C,) each, training part only
        self._scale = (1 / (255 * self.std)).view(1, -1, 1, 1)
        self._shift = (-self.mean / self.std).view(1, -1, 1, 1)

        self.generator = torch.Generator().manual_seed(seed)
        self._train_perm: torch.Tensor | None = None  # permutation of the epoch in progress (None: none started)
        self._train_pos = 0
        self._valid_perm: torch.Tensor | None = None
        self._valid_pos = 0

    # ------------------------------------------------------------------------------------------------ batches

    def split_size(self, split: str) -> int:
        """Number of images in ``split`` ("train", "valid" (0 when valid_size=0) or "test")."""
        if split not in self._y:
            raise ValueError(f"unknown split {split!r}; use 'train', 'valid' or 'test'")
        return self._y[split].shape[0]

    def _split(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in self._x:
            raise ValueError(f"unknown split {split!r}; use 'train', 'valid' or 'test'")
        if split == "valid" and self._y["valid"].shape[0] == 0:
            raise ConfigError("there is no validation split (valid_size=0); set valid_size > 0 to use it")
        return self._x[split], self._y[split]

    def _normalised(self, split: str, idx: torch.Tensor | slice, aug: AugmentParams | None = None) -> torch.Tensor:
        return gather_batch(self._x[split], idx, self._shift, self._scale, aug, self.cfg.cutout)

    def shard(self, rank: int, world: int) -> None:
        """Keep rank ``rank``'s contiguous share of every training, reward and evaluation batch. The last training
        batch of an epoch is cut to a multiple of ``world`` rows (so every rank's gradient weighs the same number of
        rows: fewer than ``world`` images per epoch go unused, different ones each epoch)."""
        self._check_divisible(self.cfg, ("batch_size", "reward_batch_size", "eval_batch_size"), world)
        self.rank, self.world = rank, world

    def num_train_batches(self) -> int:
        n, bs = self._y["train"].shape[0], self.cfg.batch_size
        if 0 < n % bs < self.world:  # sharded: a last batch of fewer rows than ranks is skipped
            return n // bs
        return math.ceil(n / bs)

    def train_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yields (images (B, C, S, S) float, labels (B,)) over a fresh permutation of the training part; the last
        batch may be smaller. An epoch left unfinished (or restored mid-way by `load_state_dict`) is continued by
        the next call before a new permutation is drawn."""
        n, bs = self._y["train"].shape[0], self.cfg.batch_size
        if self._train_perm is None:
            self._train_perm, self._train_pos = torch.randperm(n, generator=self.generator).to(self.device), 0
        perm, start = self._train_perm, self._train_pos
        for pos in range(start, n, bs):
            idx = perm[pos : pos + bs]
            aug = None
            if self.cfg.augment or self.cfg.cutout:
                aug = sample_augment(
                    idx.shape[0], self.info.image_size, self.cfg.cutout, self.cfg.cutout_anchor, self.generator,
                    self.device,
                )  # fmt: skip
                if not self.cfg.augment:  # cutout alone: an identity crop without flips
                    aug.dy.fill_(PAD)
                    aug.dx.fill_(PAD)
                    aug.flip.fill_(False)
            end = min(pos + bs, n)
            # Advance the cursor before yielding, so a checkpoint taken after this batch resumes after it.
            self._train_perm, self._train_pos = (perm, end) if end < n else (None, 0)
            if self.world > 1:  # drawn for the global batch as above; this rank keeps its share
                part = self.share(idx.shape[0] - idx.shape[0] % self.world)
                if part.start == part.stop:
                    continue
                idx = idx[part]
                if aug is not None:
                    aug = AugmentParams(aug.dy[part], aug.dx[part], aug.flip[part], aug.cut_y[part], aug.cut_x[part])
            yield self._normalised("train", idx, aug), self._y["train"][idx]

    def start_epoch(self, model: nn.Module) -> None:
        """Nothing carries over between epochs of an image task."""

    def reward_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next ``reward_batch_size`` validation images (not augmented), cycling through a permutation of the
        validation split that is redrawn when too few images are left for a full batch."""
        _, labels = self._split("valid")
        n = labels.shape[0]
        bs = min(self.cfg.reward_batch_size, n)
        if self._valid_perm is None or self._valid_pos + bs > n:
            self._valid_perm, self._valid_pos = torch.randperm(n, generator=self.generator).to(self.device), 0
        idx = self._valid_perm[self._valid_pos : self._valid_pos + bs]
        self._valid_pos += bs
        if self.world > 1:
            idx = idx[self.share(idx.shape[0])]
        return self._normalised("valid", idx), labels[idx]

    # ------------------------------------------------------------------------------------------- loss, metrics

    def shared_loss(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], arch: Any = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """CE of the logits + aux_weight * CE of the auxiliary logits (when the model returns them). The logged
        ``loss`` is the main head's CE (as the authors log it); ``aux_loss`` is added when there is an aux head."""
        x, y = batch
        logits, aux = model(x, arch=arch)
        ce = F.cross_entropy(logits, y)
        acc = (logits.argmax(dim=1) == y).float().mean()
        if aux is None:
            loss, ce_aux = ce, None
        else:
            ce_aux = F.cross_entropy(aux, y)
            loss = ce + self.cfg.aux_weight * ce_aux
        stats = {"loss": ce.detach(), "acc": acc}  # 0-dim tensors: read once per epoch (`StatsMean`), not per step
        if ce_aux is not None:
            stats["aux_loss"] = ce_aux.detach()
        return loss, stats

    @torch.no_grad()
    def reward(self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], arch: Any = None) -> float:
        """Accuracy of ``arch`` on one validation minibatch (sharded: on the global minibatch)."""
        x, y = batch
        if self.world > 1:
            return sharded_accuracy(model, x, y, arch)
        logits, _ = model(x, arch=arch)
        return (logits.argmax(dim=1) == y).float().mean().item()

    def _eval_inputs(self, split: str, rows: slice) -> torch.Tensor:
        return self._normalised(split, rows)  # a view: no index tensor, no copy before .float()
