"""The ENAS search loop: the one place where a space, the controller and a task meet.

Each epoch (spec 1.1):
  1. shared phase: for every training minibatch, sample one arch from the controller and take one SGD step on the
     supernet's weights along that arch's path;
  2. controller phase: ``train_steps`` REINFORCE updates, each aggregating ``num_aggregate`` archs scored on fresh
     validation minibatches;
  3. log a few sampled archs with their minibatch reward, evaluate on the validation split (a fresh arch per batch),
     write a metrics line and an atomic checkpoint.
At the end, `derive` samples candidate archs, scores each on the whole validation split, and writes
``candidates.csv`` and the best as ``arch.json`` (with a picture). The test split is never used here.

Options (all off in the paper presets, docs/fidelity.md): ``search.score`` / ``score_batches`` choose how rewards
and derive scores are computed (`enas.search.scoring`); ``search.warmup_epochs`` trains the shared weights under uniform
archs for the first epochs, without a controller phase; ``search.dedup`` counts equivalent candidates once.

Under torchrun every rank runs this loop on its share of each batch (`enas.runs.distributed`, docs/distributed.md): the
same archs everywhere (checked after every phase), gradients averaged after each backward, BN statistics averaged
after each shared phase, rewards and metrics global; rank 0 alone writes the run directory.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from enas import kernels
from enas.arch import Arch, save_arch
from enas.build import autocast, build_space, build_task, explain_out_of_memory
from enas.config import Config, apply_resume_overrides, dump_yaml
from enas.errors import ConfigError
from enas.presets import checkpoint_config
from enas.runs import distributed as dist
from enas.runs.environment import environment_info, resolve_device, rng_state, seed_everything, set_rng_state
from enas.runs.progress import Progress
from enas.runs.rundir import open_run_dir
from enas.search import scoring
from enas.search.controller import Controller, UniformSampler
from enas.search.diagnostics import PHASES, ArchCounter, CollapseMonitor, epoch_line
from enas.search.reinforce import ReinforceTrainer
from enas.train.optim import DivergenceWatch, StatsMean, lr_at, make_sgd, set_lr, sgd_step
from enas.validate import validate_config
from enas.viz.arch import draw_arch, plot_curves, plot_op_shares

POLICIES = ("enas", "random")


class Search:
    """A search run bound to a run directory: ``Search(cfg, out)`` (or `Search.start`) starts one,
    `Search.resume` restores everything from the last checkpoint of one."""

    def __init__(self, cfg: Config, out: str | Path, *, progress: bool | None = None):
        self._open(cfg, out, False, progress, None)

    @classmethod
    def start(cls, cfg: Config, out: str | Path, *, progress: bool | None = None) -> Search:
        """A new search of ``cfg`` (a resolved, validated config) writing the run directory ``out``."""
        return cls(cfg, out, progress=progress)

    @classmethod
    def resume(cls, run_dir: str | Path, overrides: list[tuple[str, Any]] | None = None, *,
               progress: bool | None = None) -> Search:
        """The search of ``run_dir`` from its last checkpoint; ``overrides`` are (key, value) pairs that a resume
        may change (`enas.config.RESUMABLE`), applied and recorded in config.yaml."""
        self = cls.__new__(cls)
        self._open(None, run_dir, True, progress, overrides)
        return self

    def _open(self, cfg: Config | None, out: str | Path, resume: bool, progress: bool | None,
              overrides: list[tuple[str, Any]] | None) -> None:
        if not resume:
            validate_config(cfg)
        dist.init()  # under torchrun: join the other ranks (a no-op otherwise, or when `enas` did it already)
        self.run_dir = open_run_dir(out, resume, "search")  # under torchrun, rank 0 alone writes it
        try:
            self._setup(cfg, out, resume, progress, overrides)
        except BaseException:
            self.run_dir.abandon()  # a failed start leaves no empty run directory behind
            raise

    def _setup(self, cfg: Config | None, out: str | Path, resume: bool, progress: bool | None,
               overrides: list[tuple[str, Any]] | None) -> None:
        ckpt = None
        if resume:
            ckpt = self.run_dir.load_checkpoint()
            cfg = checkpoint_config(ckpt, str(self.run_dir.checkpoint_path))
            policy = cfg.search.policy
            asked = dict(overrides or []).get("search.policy", policy)
            if asked != policy:
                raise ConfigError(f"{out} was searched with the {policy!r} policy and a resumed run keeps it: drop "
                                  f"--controller / search.policy or start a new run")
            changed = apply_resume_overrides(cfg, overrides or [])  # e.g. a lower learning rate after a divergence
            validate_config(cfg)
            if changed:  # the run directory records the config the run continues with
                self.run_dir.write_text("config.yaml", dump_yaml(cfg))
        self.cfg = cfg
        if cfg.search.policy not in POLICIES:
            raise ConfigError(f"search.policy: {cfg.search.policy!r} is not one of {list(POLICIES)}")
        self.device = dist.device(resolve_device(cfg.device))
        seed_everything(cfg.seed)  # the same seed on every rank: the same archs and batches (distributed.py)
        self.task = build_task(cfg, self.device)
        self._digest: dist.ArchDigest | None = None  # distributed: the archs this rank used since the last check
        self._sync = None  # distributed: averages the gradients after each backward
        if dist.active():
            self.task.shard(dist.rank(), dist.world())
            self._digest = dist.ArchDigest()
            self._sync = lambda: dist.average_gradients(self.supernet.parameters())
        self.space = build_space(cfg)
        with explain_out_of_memory(cfg, f"the {cfg.space} supernet"):
            self.supernet = self.space.build_supernet(self.task.info).to(self.device)
        # what the task calls: distributed, the supernet drawing its random masks from this rank's own stream
        self._net = dist.RankRandom(self.supernet, cfg.seed, self.device) if dist.active() else self.supernet
        # The controller is tiny and sequential: it stays on the CPU, where sampling needs no device syncs.
        self.controller = Controller(self.space, cfg.controller)
        self.trainer = ReinforceTrainer(self.controller, cfg.controller)
        # Random search with weight sharing: archs come from a uniform sampler (global torch RNG, checkpointed);
        # the controller above is kept for the checkpoint layout but never sampled or trained.
        self.uniform = UniformSampler(self.space)  # also the warm-up's sampler (search.warmup_epochs)
        self.sampler = self.uniform if cfg.search.policy == "random" else self.controller
        self._active = self.sampler  # what samples the archs now: the uniform sampler during a warm-up epoch
        self.optimizer = make_sgd(self.supernet.parameters(), cfg.search.optim)
        self.epoch = 0  # completed epochs
        self.seconds = {p: 0.0 for p in PHASES}
        self.progress = Progress(enabled=progress, silent=not dist.is_main())
        if resume:
            self._restore(ckpt)
        else:
            self.run_dir.write_text("config.yaml", dump_yaml(cfg))
        if dist.active():  # equal already (same seed, same checkpoint); made certain, once
            dist.broadcast_tensors([*self.supernet.state_dict().values(), *self.controller.state_dict().values()])

    # --- checkpoints -------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "config": self.cfg.to_dict(), "command": "search",
            "epoch": self.epoch,
            "supernet": self.supernet.state_dict(),
            "controller": self.controller.state_dict(),
            "reinforce": self.trainer.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "task": self.task.state_dict(),
            "data": self.task.fingerprint(),
            "rng": rng_state(),
            "seconds": dict(self.seconds),
        }

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.epoch = ckpt["epoch"]
        self.supernet.load_state_dict(ckpt["supernet"])
        self.controller.load_state_dict(ckpt["controller"])
        self.trainer.load_state_dict(ckpt["reinforce"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.task.check_same_data(ckpt.get("data"), self.cfg.resume_new_data)
        self.task.load_state_dict(ckpt["task"])
        set_rng_state(ckpt["rng"])
        self.seconds = dict(ckpt["seconds"])
        self.run_dir.truncate_metrics(after_epoch=self.epoch)

    # --- the loop ----------------------------------------------------------------------------------------------
    def sample_arch(self) -> Arch:
        with torch.no_grad():
            arch = self._active.sample().arch
        if self._digest is not None:
            self._digest.add(arch)
        return arch

    def _check_archs(self, where: str) -> None:
        """Distributed: stop every rank if any of them used other archs than rank 0 since the last check."""
        if self._digest is not None:
            self._digest.check(where)

    def _reward_mode(self) -> None:
        """Rewards, validation and derive scores all use ``search.reward_mode``: "eval" (BN running statistics,
        no dropout; the authors' macro setting) or "train" (batch statistics)."""
        self.supernet.train(self.cfg.search.reward_mode == "train")

    def reward(self, arch: Arch) -> float:
        if self._digest is not None:  # distributed: the controller's samples reach the search here
            self._digest.add(arch)
        return scoring.reward(self.task, self._net, arch, self.cfg.search.score, self.cfg.search.score_batches)

    def train_shared(self, epoch: int) -> dict[str, float]:
        cfg = self.cfg.search
        lr = lr_at(epoch, cfg.optim)
        set_lr(self.optimizer, lr)
        self.supernet.train()
        self.task.start_epoch(self.supernet)
        if dist.active():
            self._net.start_epoch(epoch)
        total = self.task.num_train_batches()
        if cfg.shared_steps:
            total = min(total, cfg.shared_steps)
        stats_mean = StatsMean()
        watch = DivergenceWatch(lambda step: f"in shared training (epoch {epoch + 1}, step {step})",
                                self.run_dir.path)
        counter = ArchCounter(self.space.decisions(), self.space.vocabularies())  # op shares, distinct archs
        self.progress.start(f"epoch {epoch + 1}/{cfg.epochs} shared", total)
        for batch in self.task.train_batches():
            if stats_mean.count >= total:
                break
            with torch.no_grad():
                sample = self._active.sample()
            arch = sample.arch
            counter.add(sample.actions, sample.skip_rate)
            if self._digest is not None:
                self._digest.add(arch)
            loss, stats = self.task.shared_loss(self._net, batch, arch)
            watch.add(loss)  # no device read per step (a GPU runs ahead); checked every few steps
            sgd_step(self.optimizer, self.supernet, loss, cfg.optim.grad_clip, sync=self._sync)
            stats_mean.add(stats)
            self.progress.update(stats_mean.count, stats)
        watch.check()
        self.progress.end()
        means = stats_mean.means("train_")
        if dist.active():  # every rank's shards: the figures of the global batches
            self._check_archs(f"shared training of epoch {epoch + 1}")
            dist.average_buffers(self.supernet)
            means = {k: v / dist.world() for k, v in dist.all_reduce_sums(means).items()}
        return {"lr": lr, "steps": stats_mean.count, **means, **counter.fields()}

    def train_controller(self, epoch: int) -> dict[str, float]:
        if self.cfg.search.policy != "enas":  # a uniform sampler is not trained
            return {}
        cfg = self.cfg.controller
        self._reward_mode()
        self.progress.start(f"epoch {epoch + 1}/{self.cfg.search.epochs} controller", cfg.train_steps)
        stats = self.trainer.train_epoch(self.reward, steps=cfg.train_steps,
                                         callback=lambda i, s: self.progress.update(i + 1, s))
        self.progress.end()
        self._check_archs(f"controller training of epoch {epoch + 1}")
        return {f"controller_{k}": v for k, v in stats.items()}

    def log_sampled_archs(self, epoch: int) -> list[float]:
        """Log ``log_archs`` fresh samples with their minibatch reward (the authors' derive material)."""
        self._reward_mode()
        rewards = []
        for _ in range(self.cfg.search.log_archs):
            arch = self.sample_arch()
            r = self.reward(arch)
            rewards.append(r)
            self.run_dir.log("arch", epoch=epoch + 1, reward=r, fixed_arc=arch.to_fixed_arc())
        return rewards

    def evaluate(self) -> dict[str, float]:
        self._reward_mode()
        metrics = self.task.evaluate(self._net, "valid", arch_fn=self.sample_arch)
        return {f"valid_{k}": v for k, v in metrics.items()}

    def run(self) -> dict[str, Any]:
        with explain_out_of_memory(self.cfg, f"the {self.cfg.space} supernet"), autocast(self.cfg, self.device):
            with self.run_dir.running():  # a run failing before its first checkpoint leaves no directory
                return self._run()

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg.search
        monitor = CollapseMonitor.from_records(self.run_dir.read_metrics(), cfg.epochs)  # early-collapse warnings
        while self.epoch < cfg.epochs:
            e = self.epoch
            warmup = e < cfg.warmup_epochs  # uniform archs, no controller phase (resumes by the epoch alone)
            self._active = self.uniform if warmup else self.sampler
            record: dict[str, Any] = {"warmup": True} if warmup else {}
            t = time.perf_counter()
            record.update(self.train_shared(e))
            self.seconds["shared"] += time.perf_counter() - t
            t = time.perf_counter()
            if cfg.policy == "enas" and not warmup and cfg.controller_every and (e + 1) % cfg.controller_every == 0:
                record.update(self.train_controller(e))
            self.seconds["controller"] += time.perf_counter() - t
            t = time.perf_counter()
            rewards = self.log_sampled_archs(e)
            if rewards:
                record["sampled_reward_max"] = max(rewards)
                record["sampled_reward_mean"] = sum(rewards) / len(rewards)
            if cfg.eval_every and ((e + 1) % cfg.eval_every == 0 or e + 1 == cfg.epochs):
                record.update(self.evaluate())
            self.seconds["eval"] += time.perf_counter() - t
            record.update({f"seconds_{k}": v for k, v in self.seconds.items()})
            self._check_archs(f"validation of epoch {e + 1}")
            self.epoch = e + 1
            self.run_dir.log("epoch", epoch=self.epoch, **record)
            previous = monitor.last
            warnings = monitor.check(self.epoch, record)
            self.progress.line(epoch_line(self.epoch, cfg.epochs, record, previous))
            for kind, message in warnings:
                self.run_dir.log("warning", epoch=self.epoch, warning=kind, message=message)
                self.progress.line(f"warning: {message}")
            dist.average_buffers(self.supernet)  # distributed: rank 0 saves what every rank holds
            self.run_dir.save_checkpoint(self._state())  # every rank builds the state (the text task gathers)
        self._active = self.sampler
        return self.derive()

    def _score(self, archs: dict[Any, Arch], label: str | None = None) -> list[tuple]:
        """(score, fixed_arc, arch, metrics) of each arch on the whole validation split, best first, scored as
        ``search.score`` says (`enas.search.scoring`)."""
        self._reward_mode()
        return scoring.score_archs(self.task, self._net, archs, self.cfg.search.score, self.progress, label)

    def _write_arch(self, best: Arch) -> Path | None:
        """arch.json and, with matplotlib, the arch's picture and the curves; returns the picture's path."""
        save_arch(best, self.run_dir.path / "arch.json")
        picture = None
        try:

            picture = draw_arch(best, self.run_dir.path / "arch.png", title=f"{self.cfg.space}: best derived arch")
            if self.run_dir.read_metrics("epoch"):
                plot_curves(self.run_dir.metrics_path, self.run_dir.path / "curves.png")
                plot_op_shares(self.run_dir.metrics_path, self.run_dir.path / "ops.png", required=False)
        except ImportError:  # matplotlib missing: the arch file is what matters
            pass
        return picture

    def _trend(self) -> dict[str, list[float]]:
        """First and last epoch values of the controller's reward and entropy and of the validation figures."""
        epochs = self.run_dir.read_metrics("epoch")
        out = {}
        for key in ("controller_reward", "controller_entropy_frac", "valid_acc", "valid_ppl", "train_loss"):
            values = [r[key] for r in epochs if isinstance(r.get(key), (int, float))]
            if values:
                out[key] = [values[0], values[-1]]
        return out

    def _uniform_reference(self) -> dict[str, Any] | None:
        """Score ``search.derive_uniform`` distinct uniformly sampled archs exactly as the candidates; written to
        ``uniform_candidates.csv``. The draw depends on the seed only (not on the run's random state), so an ENAS
        run and a random-search run of the same seed are compared with the same reference archs."""
        n = self.cfg.search.derive_uniform
        if n <= 0:
            return None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed + 104_729)
            sampler = UniformSampler(self.space)
            archs: dict[Any, Arch] = {}
            for _ in range(20 * n):
                arch = sampler.sample().arch
                archs.setdefault(scoring.arch_key(arch, self.cfg.search.dedup), arch)
                if len(archs) == n:
                    break
            scored = self._score(archs)
        self.run_dir.write_text("uniform_candidates.csv", scoring.candidates_csv(scored))
        scores = [s[0] for s in scored]
        ref = {"n": len(scores), "median": statistics.median(scores), "mean": statistics.fmean(scores),
               "best": scores[0], "worst": scores[-1]}
        for key in ("ppl", "acc"):
            values = [s[3][key] for s in scored if key in s[3]]
            if values:
                ref[f"median_valid_{key}"] = statistics.median(values)
        return ref

    # --- derive ------------------------------------------------------------------------------------------------
    def derive(self, samples: int | None = None) -> dict[str, Any]:
        """Score ``samples`` distinct sampled archs (plus the argmax one if configured) on the whole validation
        split; write candidates.csv, arch.json, arch.png and summary.json. Returns the summary. Distinct: by
        integer notation, or with ``search.dedup`` as networks (`Arch.canonical`; the first sample of each)."""
        samples = self.cfg.search.derive_samples if samples is None else samples
        dedup = self.cfg.search.dedup
        t = time.perf_counter()
        candidates: dict[Any, Arch] = {}
        # a uniform sampler has no most likely arch: under the random policy derive_greedy adds nothing
        greedy = self.cfg.search.derive_greedy and self.cfg.search.policy == "enas"
        if greedy:
            with torch.no_grad():
                arch = self.controller.sample(greedy=True).arch
            candidates[scoring.arch_key(arch, dedup)] = arch
            if self._digest is not None:
                self._digest.add(arch)
        tries = 0
        while len(candidates) < samples + int(greedy) and tries < 20 * max(samples, 1):
            arch = self.sample_arch()
            candidates.setdefault(scoring.arch_key(arch, dedup), arch)
            tries += 1
        scored = self._score(candidates, "derive")
        reference = self._uniform_reference()
        self._check_archs("derive")
        self.seconds["eval"] += time.perf_counter() - t
        best_score, _, best, best_metrics = scored[0]
        self.run_dir.write_text("candidates.csv", scoring.candidates_csv(scored))
        picture = self._write_arch(best) if dist.is_main() else None  # rank 0 owns the run directory
        self.run_dir.log("derive", epoch=self.epoch, candidates=len(scored), best_score=best_score,
                         fixed_arc=best.to_fixed_arc(),
                         **({"uniform_median": reference["median"]} if reference else {}))
        summary = {
            "command": "search",
            "run_dir": str(self.run_dir.path),
            "space": self.cfg.space,
            "dataset": self.cfg.dataset,
            "preset": self.cfg.preset,
            "policy": self.cfg.search.policy,
            "kernels": kernels.record(self.cfg.kernels, self.cfg.model),
            "data_fingerprint": self.task.fingerprint(),
            "seed": self.cfg.seed,
            "epochs": self.epoch,
            "best": {"score": best_score, **{f"valid_{k}": v for k, v in best_metrics.items()},
                     "fixed_arc": best.to_fixed_arc(), "arch": best.to_json()},
            "candidates": len(scored),
            "uniform_reference": reference,
            "trend": self._trend(),
            "seconds": dict(self.seconds),
            "picture": str(picture) if picture else None,
            "environment": environment_info(),
        }
        self.run_dir.write_json("summary.json", summary)
        return summary

