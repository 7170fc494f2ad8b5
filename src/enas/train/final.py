"""Final training of one architecture from scratch, its evaluation on the test split, and the model file.

The recipe comes from ``cfg.train`` (optimizer and schedule), ``cfg.model`` (sizes, dropout, drop-path, auxiliary
head) and ``cfg.task`` (batching, augmentation, cutout, regularisers): see `enas.presets` for the paper's values.
For language models, ``train.averaging`` averages the weights (the corrected recipe's ASGD-like averaging) from the
first validation whose perplexity is worse than the best one measured before the last ``averaging_patience``
validations (the corrected code's start rule, see `FinalTraining._maybe_start_averaging`); evaluation then uses the
averaged weights.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from enas import kernels
from enas.arch import Arch, arch_from_json, save_arch
from enas.build import autocast, build_space, build_task, explain_out_of_memory, fit_model_to_arch
from enas.config import Config, apply_resume_overrides, dump_yaml, set_key
from enas.errors import ConfigError, UserError
from enas.presets import checkpoint_config, config_from_dict
from enas.runs import distributed as dist
from enas.runs.environment import environment_info, resolve_device, rng_state, seed_everything, set_rng_state
from enas.runs.progress import Progress
from enas.runs.rundir import UnsafeFileError, atomic_write_bytes, load_tensors, open_run_dir
from enas.train.optim import DivergenceWatch, StatsMean, lr_at, make_sgd, set_lr, sgd_step
from enas.validate import validate_config
from enas.viz.arch import plot_curves

MODEL_FORMAT = "enas-model"


class WeightAverage:
    """Running mean of a model's parameters (started once, updated after every optimizer step).

    As in the corrected LM code, the mean covers the weights after each step taken once averaging has started,
    not the weights at the start: the first `update` replaces the copy taken here (which only serves a swap made
    before any step).
    """

    def __init__(self, model: nn.Module):
        self.params = [p for p in model.parameters()]
        self.mean = [p.detach().clone() for p in self.params]
        self.count = 0

    @torch.no_grad()
    def update(self) -> None:
        self.count += 1
        for m, p in zip(self.mean, self.params):
            m.add_(p.detach() - m, alpha=1.0 / self.count)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live parameters and the averaged ones (call twice to undo)."""
        for m, p in zip(self.mean, self.params):
            tmp = p.detach().clone()
            p.copy_(m)
            m.copy_(tmp)

    def state_dict(self) -> dict[str, Any]:
        return {"mean": [m.cpu() for m in self.mean], "count": self.count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for m, s in zip(self.mean, state["mean"]):
            m.copy_(s)
        self.count = state["count"]


class FinalTraining:
    """Train ``arch`` from scratch under ``cfg``, writing a run directory: ``FinalTraining(cfg, arch, out)`` (or
    `FinalTraining.start`) starts one, `FinalTraining.resume` continues one from its last checkpoint."""

    def __init__(self, cfg: Config, arch: Arch, out: str | Path, *, progress: bool | None = None):
        self._open(cfg, arch, out, False, progress, None)

    @classmethod
    def start(cls, cfg: Config, arch: Arch, out: str | Path, *, progress: bool | None = None) -> FinalTraining:
        """A new final training of ``arch`` under ``cfg`` writing the run directory ``out``."""
        return cls(cfg, arch, out, progress=progress)

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[tuple[str, Any]] | None = None, *,
               progress: bool | None = None) -> FinalTraining:
        """The training of ``run_dir`` from its last checkpoint; ``overrides`` as in `Search.resume`."""
        self = cls.__new__(cls)
        self._open(None, None, run_dir, True, progress, overrides)
        return self

    def _open(self, cfg: Config | None, arch: Arch | None, out: str | Path, resume: bool, progress: bool | None,
              overrides: list[tuple[str, Any]] | None) -> None:
        if not resume:
            validate_config(cfg)
        dist.init()  # under torchrun: join the other ranks (a no-op otherwise, or when `enas` did it already)
        self.run_dir = open_run_dir(out, resume, "train")  # under torchrun, rank 0 alone writes it
        try:
            self._setup(cfg, arch, resume, progress, overrides)
        except BaseException:
            self.run_dir.abandon()  # a failed start leaves no empty run directory behind
            raise

    def _setup(self, cfg: Config | None, arch: Arch | None, resume: bool, progress: bool | None,
               overrides: list[tuple[str, Any]] | None) -> None:
        ckpt = None
        if resume:
            ckpt = self.run_dir.load_checkpoint()
            cfg, arch = checkpoint_config(ckpt, str(self.run_dir.checkpoint_path)), arch_from_json(ckpt["arch"])
            changed = apply_resume_overrides(cfg, overrides or [])
            validate_config(cfg)
            if changed:  # the run directory records the config the run continues with
                self.run_dir.write_text("config.yaml", dump_yaml(cfg))
        if arch.space != cfg.space:
            raise UserError(f"the architecture is a {arch.space} arch but the run is configured for the {cfg.space} "
                            f"space; pass --space {arch.space} or another arch file")
        fit_model_to_arch(cfg, arch)
        self.cfg, self.arch = cfg, arch
        self.device = dist.device(resolve_device(cfg.device))
        seed_everything(cfg.seed)  # the same seed on every rank: the same batches and initial weights
        self.task = build_task(cfg, self.device)
        self._sync = None  # distributed: averages the gradients after each backward (enas.runs.distributed)
        if dist.active():
            self.task.shard(dist.rank(), dist.world())
            self._sync = lambda: dist.average_gradients(self.model.parameters())
        self.space = build_space(cfg)
        with explain_out_of_memory(cfg, f"the {cfg.space} child network"):
            self.model = self.space.build_child(arch, self.task.info, final=True).to(self.device)
        if cfg.train.compile:
            self.model = self.space.compile_child(self.model)
        # what the task calls: distributed, the model drawing its random masks from this rank's own stream
        self._net = dist.RankRandom(self.model, cfg.seed, self.device) if dist.active() else self.model
        self.optimizer = make_sgd(self.model.parameters(), cfg.train.optim)
        self.average: WeightAverage | None = None
        self.valid_history: list[float] = []  # validation losses until averaging starts, oldest first
        self.epoch = 0
        self.seconds = {"train": 0.0, "eval": 0.0}
        self.progress = Progress(enabled=progress, silent=not dist.is_main())
        if ckpt is not None:
            self._restore(ckpt)
        else:
            self.run_dir.write_text("config.yaml", dump_yaml(cfg))

            if dist.is_main():
                save_arch(arch, self.run_dir.path / "arch.json")
        if dist.active():  # equal already (same seed, same checkpoint); made certain, once
            dist.broadcast_tensors(self.model.state_dict().values())

    @property
    def has_valid(self) -> bool:
        return getattr(self.cfg.task, "valid_size", 1) > 0

    def _state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(), "command": "train", "arch": self.arch.to_json(),
            "epoch": self.epoch,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "average": self.average.state_dict() if self.average else None,
            "valid_history": list(self.valid_history),
            "task": self.task.state_dict(), "data": self.task.fingerprint(), "rng": rng_state(),
            "seconds": dict(self.seconds),
        }

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.epoch = ckpt["epoch"]
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt["average"] is not None:
            self.average = WeightAverage(self.model)
            self.average.load_state_dict(ckpt["average"])
        self.valid_history = list(ckpt.get("valid_history", []))
        self.task.check_same_data(ckpt.get("data"), self.cfg.resume_new_data)
        self.task.load_state_dict(ckpt["task"])
        set_rng_state(ckpt["rng"])
        self.seconds = dict(ckpt["seconds"])
        self.run_dir.truncate_metrics(after_epoch=self.epoch)

    def _evaluate(self, split: str) -> dict[str, float]:
        self.model.eval()
        if self.average is not None:
            self.average.swap()
        try:
            return self.task.evaluate(self._net, split)
        finally:
            if self.average is not None:
                self.average.swap()

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg.train
        lr = lr_at(epoch, cfg.optim)
        set_lr(self.optimizer, lr)
        self.model.train()
        self.task.start_epoch(self.model)
        if dist.active():
            self._net.start_epoch(epoch)
        per_epoch = self.task.num_train_batches()
        total_steps = per_epoch * cfg.epochs
        stats_mean = StatsMean()
        watch = DivergenceWatch(lambda step: f"in final training (epoch {epoch + 1}, step {step})",
                                self.run_dir.path, lr_key="train.optim.lr", hint=_divergence_hint(self.cfg))
        self.progress.start(f"epoch {epoch + 1}/{cfg.epochs}", per_epoch)
        for batch in self.task.train_batches():
            if hasattr(self.model, "drop_path_progress"):
                self.model.drop_path_progress = min(1.0, (epoch * per_epoch + stats_mean.count + 1) / total_steps)
            loss, stats = self.task.shared_loss(self._net, batch)
            watch.add(loss)  # no device read per step (a GPU runs ahead); checked every few steps
            sgd_step(self.optimizer, self.model, loss, cfg.optim.grad_clip, sync=self._sync)
            if self.average is not None:
                self.average.update()
            stats_mean.add(stats)
            self.progress.update(stats_mean.count, stats)
        watch.check()
        self.progress.end()
        means = stats_mean.means("train_")
        if dist.active():  # every rank's shards: the figures of the global batches; one model on every rank
            dist.average_buffers(self.model)
            means = {k: v / dist.world() for k, v in dist.all_reduce_sums(means).items()}
        return {"lr": lr, **means}

    def run(self) -> dict[str, Any]:
        with explain_out_of_memory(self.cfg, f"the {self.cfg.space} child network"), autocast(self.cfg, self.device):
            with self.run_dir.running():  # a run failing before its first checkpoint leaves no directory
                return self._run()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg.train
        while self.epoch < cfg.epochs:
            e = self.epoch
            t = time.perf_counter()
            record = self.train_epoch(e)
            self.seconds["train"] += time.perf_counter() - t
            t = time.perf_counter()
            if self.has_valid and cfg.eval_every and ((e + 1) % cfg.eval_every == 0 or e + 1 == cfg.epochs):
                valid = self._evaluate("valid")
                record.update({f"valid_{k}": v for k, v in valid.items()})
                self._maybe_start_averaging(valid)
            self.seconds["eval"] += time.perf_counter() - t
            record["averaging"] = self.average is not None
            self.epoch = e + 1
            seconds = {f"seconds_{k}": v for k, v in self.seconds.items()}
            self.run_dir.log("epoch", epoch=self.epoch, **record, **seconds)
            self.progress.line(_line(self.epoch, cfg.epochs, record))
            if cfg.checkpoint_every and (self.epoch % cfg.checkpoint_every == 0 or self.epoch == cfg.epochs):
                self.run_dir.save_checkpoint(self._state())
        return self.finish()

    def _maybe_start_averaging(self, valid: dict[str, float]) -> None:
        """The corrected code's start rule (``fixed.py``, threshold 10): averaging starts at the first validation
        whose loss is strictly worse than the best of the validations made before the last ``averaging_patience``
        ones, so at least ``averaging_patience + 1`` earlier validations are needed. (Not "no improvement for
        ``patience`` validations": an improvement inside the window does not delay the start, and a stalled loss
        that is no worse than the old best does not trigger it.) Loss and perplexity order validations alike."""
        if not self.cfg.train.averaging or self.average is not None:
            return
        loss, history, patience = valid["loss"], self.valid_history, self.cfg.train.averaging_patience
        if len(history) > patience and loss > min(history[: len(history) - patience]):
            self.average = WeightAverage(self.model)
            history.clear()  # no longer needed
            return
        history.append(loss)

    def finish(self) -> dict[str, Any]:
        t = time.perf_counter()
        test = self._evaluate("test")
        self.seconds["eval"] += time.perf_counter() - t
        if self.average is not None:
            self.average.swap()  # the saved model holds the averaged weights
        model_path = self.run_dir.path / "model.pt"
        if dist.is_main():
            save_model(model_path, self.model, self.arch, self.cfg, self.task.info)
        if self.average is not None:
            self.average.swap()
        n_params = sum(p.numel() for p in self.model.parameters())
        summary = {
            "command": "train", "space": self.cfg.space, "dataset": self.cfg.dataset, "preset": self.cfg.preset,
            "seed": self.cfg.seed, "epochs": self.epoch, "params": n_params,
            "kernels": kernels.record(self.cfg.kernels, self.cfg.model), "data_fingerprint": self.task.fingerprint(),
            **{f"test_{k}": v for k, v in test.items()},
            "fixed_arc": self.arch.to_fixed_arc(), "model": str(model_path), "seconds": dict(self.seconds),
            "environment": environment_info(),
        }
        self.run_dir.log("test", epoch=self.epoch, **{f"test_{k}": v for k, v in test.items()})
        self.run_dir.write_json("summary.json", summary)
        try:

            if dist.is_main():
                plot_curves(self.run_dir.metrics_path, self.run_dir.path / "curves.png")
        except ImportError:
            pass
        return summary


def save_model(path: Path, model: nn.Module, arch: Arch, cfg: Config, info: Any) -> None:
    state = {
        "format": MODEL_FORMAT, "version": 1, "arch": arch.to_json(), "config": cfg.to_dict(),
        "task_info": dataclasses.asdict(info), "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
    }
    atomic_write_bytes(Path(path), lambda f: torch.save(state, f))


def load_model_file(path: str | Path) -> tuple[dict[str, Any], Config, Arch]:
    """Read a model file (or a training run directory holding model.pt) -> (raw dict, config, arch)."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise UserError(f"no model at {path}; pass a run directory of `enas train` or its model.pt")
    try:
        state = load_tensors(path)
    except UnsafeFileError:
        raise
    except Exception as e:
        raise UserError(f"{path} cannot be read as a model file ({type(e).__name__})") from e
    if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
        raise UserError(f"{path} is not a model file written by `enas train`")
    try:
        cfg, dropped = config_from_dict(state["config"], "train")
    except ConfigError as e:
        raise UserError(f"the config stored in {path} cannot be read by this version ({e})") from None
    if dropped:
        print(f"warning: {path} sets config keys this version no longer has, ignored: {', '.join(dropped)}",
              file=sys.stderr)
    return state, cfg, arch_from_json(state["arch"])


def evaluate_model(path: str | Path, dataset: str | None = None, device: str = "auto",
                   overrides: list[tuple[str, Any]] | None = None, split: str = "test") -> dict[str, float]:
    """Recompute the metrics of a saved model on ``split`` of its data (or of ``dataset``)."""
    state, cfg, arch = load_model_file(path)
    if dataset:
        task = cfg.entry().task
        fits = {"text": dataset == "ptb", "images": dataset != "ptb", "tabular": dataset.endswith(".npz")}[task]
        if not fits:
            kind = {"text": "a language model", "images": "an image classifier",
                    "tabular": "a tabular classifier"}[task]
            choices = {"text": "ptb (--set task.root=DIR for another corpus)",
                       "images": "cifar10, fashion-mnist or FILE.npz", "tabular": "FILE.npz"}[task]
            raise UserError(f"{path} holds {kind} ({cfg.space} space) and cannot be evaluated on {dataset!r}; "
                            f"use --data {choices}")
        cfg.dataset = dataset
        if task != "text":
            cfg.task.dataset = dataset
    cfg.device = device
    for key, value in overrides or []:
        set_key(cfg, key, value)
    dev = resolve_device(cfg.device)
    task = build_task(cfg, dev)
    model = build_space(cfg).build_child(arch, task.info, final=True)
    try:
        model.load_state_dict(state["state_dict"])
    except RuntimeError as e:
        raise UserError(f"the model's weights do not fit the data given ({str(e).splitlines()[0]}); "
                        "evaluate on the dataset it was trained on") from e
    model.to(dev).eval()
    with autocast(cfg, dev):
        return task.evaluate(model, split)


def _divergence_hint(cfg: Config) -> str:
    """A recurrent cell of identity and ReLU nodes has an unbounded recurrence (docs/results.md): name the bound."""
    if getattr(cfg.model, "final_batch_norm", True):
        return ""
    return "; or bound the recurrent state with --set model.final_batch_norm=true"


def _line(epoch: int, total: int, r: dict[str, Any]) -> str:
    parts = [f"epoch {epoch}/{total}", f"lr {r.get('lr', 0):.4g}"]
    for key in ("train_loss", "train_ppl", "train_acc", "valid_loss", "valid_ppl", "valid_acc"):
        if isinstance(r.get(key), (int, float)):
            parts.append(f"{key} {r[key]:.4g}")
    if r.get("averaging"):
        parts.append("averaging")
    return " | ".join(parts)
