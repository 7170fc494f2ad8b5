"""The `enas` commands that train and write run directories: search, derive and train (with ``--resume`` and
``--seeds``), with their helpers: the resolved config, the run directory, the seeds and the arch argument (which
`enas show` reads too)."""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

from enas import registry
from enas.arch import arch_from_json, load_arch, parse_fixed_arc
from enas.build import autocast, fit_model_to_arch
from enas.config import dump_yaml, flatten_dict, load_yaml, parse_set, set_key
from enas.errors import UserError
from enas.presets import checkpoint_config, resolve
from enas.runs import distributed as dist
from enas.runs.rundir import CHECKPOINT, RunDir
from enas.search.loop import Search
from enas.search.seeds import describe, first_checkpointed, parse_seeds, run_seeds
from enas.train.final import FinalTraining


def resolve_config(space: str, dataset: str | None, args: argparse.Namespace, command: str):
    return resolve(space, command, preset=args.preset, dataset=dataset, config_file=args.config, sets=args.sets,
                   seed=args.seed, device=args.device)


def _resume_overrides(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """What a resumed run was asked to change: --config and --set keys, and --space, --data, --preset, --seed,
    --device, --cutout when given. `enas.config.apply_resume_overrides` applies the ones that may change and refuses
    the others with one line."""

    pairs = flatten_dict(load_yaml(args.config)) if args.config else []
    pairs += parse_set(args.sets)
    flags = (("space", "space"), ("data", "dataset"), ("preset", "preset"), ("seed", "seed"), ("device", "device"),
             ("cutout", "task.cutout"))
    pairs += [(key, getattr(args, flag)) for flag, key in flags if getattr(args, flag, None) is not None]
    return pairs


def _default_out(command: str, space: str) -> str:
    return str(Path("runs") / f"{command}-{space}-{time.strftime('%Y%m%d-%H%M%S')}")


def load_arch_arg(args: argparse.Namespace):
    if args.fixed_arc and args.arch:
        raise UserError("give an ARCH.json file or --fixed-arc, not both")
    if args.fixed_arc:
        if not args.space:
            raise UserError("--fixed-arc needs --space SPACE (rnn, macro, micro or another registered space)")
        return parse_fixed_arc(args.fixed_arc, args.space)
    if not args.arch:
        raise UserError("give an ARCH.json file or --fixed-arc \"INTS\" --space S")
    return load_arch(args.arch)


def _seeds_arg(args: argparse.Namespace) -> list[int] | None:
    if args.seeds is None:
        return None

    if dist.active():
        raise UserError("--seeds runs the seeds one after another; under torchrun start one launch per seed, or run "
                        "several seeds at once, one process per GPU, without torchrun (docs/distributed.md)")

    if args.seed is not None:
        raise UserError("give --seed N for one run or --seeds A,B,C for one run per seed, not both")
    return parse_seeds(args.seeds)


def _check_seed(found: int, seed: int, run_dir: Path) -> None:
    if found != seed:
        raise UserError(f"{run_dir} holds a run with seed {found}, not {seed}; check --seeds and --out")


def _template(out: str, seeds: list[int]) -> dict[str, Any]:
    """The checkpoint of a checkpointed seed of a resumed multi-seed run: a seed not started yet starts from it."""

    run_dir = first_checkpointed(out, seeds)
    if run_dir is None:
        raise UserError(f"nothing to resume in {out}; start without --resume")
    run = RunDir(run_dir, resume=True, lock=False)
    ckpt = run.load_checkpoint()
    ckpt["config"] = checkpoint_config(ckpt, str(run.checkpoint_path))
    return ckpt


def _seed_config(base, seed: int, overrides: list[tuple[str, Any]]):
    cfg = copy.deepcopy(base)
    for key, value in overrides:
        set_key(cfg, key, value)
    cfg.seed = seed
    return cfg


def _check_not_seeds_dir(out: str) -> None:
    """``--resume --out OUT`` without --seeds on a directory of several seeds: say how to resume them."""

    path = Path(out)
    if not (path / "checkpoints" / CHECKPOINT).is_file() and any(path.glob(f"seed-*/checkpoints/{CHECKPOINT}")):
        raise UserError(f"{out} holds one run per seed: resume them with --seeds S1,S2,... --resume --out {out}, "
                        f"or one of them with --resume --out {out}/seed-N")


def _report_seeds(result: dict[str, Any], out: str) -> None:
    for line in describe(result):
        print(line)
    print(f"written: {Path(out) / 'seeds.csv'}, {Path(out) / 'seeds.json'}")


def _report_search(summary: dict[str, Any]) -> None:
    best = summary["best"]
    trend = summary.get("trend", {})
    labels = {"controller_reward": "controller reward", "controller_entropy_frac": "controller entropy (of uniform)",
              "valid_acc": "validation accuracy", "valid_ppl": "validation perplexity"}
    moves = [f"{label} {trend[k][0]:.4g} -> {trend[k][1]:.4g}" for k, label in labels.items() if k in trend]
    if moves:
        print(f"first -> last epoch: {'; '.join(moves)}")
    print(f"best arch (validation score {best['score']:.4g}): {best['fixed_arc']}")
    ref = summary.get("uniform_reference")
    if ref:
        verdict = "beats" if best["score"] > ref["median"] else "does not beat"
        print(f"the best of {summary['candidates']} {summary.get('policy', 'enas')}-sampled candidates scores "
              f"{best['score']:.4g}: it {verdict} the median {ref['median']:.4g} of {ref['n']} uniformly sampled "
              f"archs on the same supernet (their best {ref['best']:.4g})")
        if "median_valid_ppl" in ref and "valid_ppl" in best:
            print(f"validation perplexity: derived {best['valid_ppl']:.1f}, median of the uniform archs "
                  f"{ref['median_valid_ppl']:.1f}")
    run = Path(summary["run_dir"])
    picture = f", {summary['picture']}" if summary["picture"] else ""
    print(f"written: {run / 'arch.json'}, {run / 'candidates.csv'}{picture}")


def cmd_search(args: argparse.Namespace) -> int:
    seeds = _seeds_arg(args)
    progress = not args.no_progress and None
    overrides = _resume_overrides(args) if args.resume else []
    if args.controller:  # a resumed run keeps its policy: Search refuses a different one
        overrides.append(("search.policy", args.controller))
    cfg = None
    if args.resume:
        if not args.out:
            raise UserError("--resume needs --out RUN_DIR")
        out = args.out
    else:
        if not args.space:
            raise UserError("--space is required: rnn, macro or micro")
        cfg = resolve_config(args.space, args.data, args, "search")
        if args.controller:
            cfg.search.policy = args.controller
        if args.print_config:
            print(dump_yaml(cfg), end="")
            return 0
        out = args.out or _default_out("search", args.space)
        if dist.is_main():
            print(f"enas search: space {cfg.space}, data {cfg.dataset}, preset {cfg.preset}, "
                  f"policy {cfg.search.policy}, run directory {out}", flush=True)
    if seeds is None:
        if args.resume:
            _check_not_seeds_dir(out)
            summary = Search.resume(out, progress=progress, overrides=overrides).run()
        else:
            summary = Search(cfg, out, progress=progress).run()
        if dist.is_main():
            _report_search(summary)
        return 0

    def run_one(seed: int, run_dir: Path, resume: bool) -> dict[str, Any]:
        if resume:
            search = Search.resume(run_dir, progress=progress, overrides=overrides)
            _check_seed(search.cfg.seed, seed, run_dir)
        elif cfg is not None:
            search = Search(_seed_config(cfg, seed, []), run_dir, progress=progress)
        else:  # resuming several seeds, this one not started: the config of a started one, with this seed
            base = _template(out, seeds)["config"]
            policy = base.search.policy
            seed_cfg = _seed_config(base, seed, overrides)
            if seed_cfg.search.policy != policy:
                raise UserError(f"the runs in {out} use the {policy!r} policy and a resumed run keeps it: drop "
                                "--controller / search.policy or start a new run")
            search = Search(seed_cfg, run_dir, progress=progress)
        summary = search.run()
        _report_search(summary)
        return summary

    _report_seeds(run_seeds(seeds, out, run_one, resume=args.resume), out)
    return 0


def cmd_derive(args: argparse.Namespace) -> int:
    run = Path(args.run_dir)
    if not run.is_dir():
        raise UserError(f"{run} is not a directory; pass the run directory of `enas search`")
    if not (run / "checkpoints" / CHECKPOINT).is_file():
        raise UserError(f"{run} has no checkpoint (checkpoints/{CHECKPOINT}); pass a search run that finished at "
                        "least one epoch")
    if args.samples is not None and args.samples < 1:
        raise UserError(f"--samples must be at least 1, got {args.samples}")
    try:
        search = Search.resume(run, progress=None)
    except (KeyError, AttributeError) as e:
        raise UserError(f"{run} is not a search run (its checkpoint lacks {e.args[0]!r}); pass a directory written "
                        "by `enas search`") from None
    with autocast(search.cfg, search.device):
        summary = search.derive(args.samples)
    print(f"best arch (validation score {summary['best']['score']:.4g}): {summary['best']['fixed_arc']}")
    print(f"written: {Path(args.run_dir) / 'arch.json'}, {Path(args.run_dir) / 'candidates.csv'}")
    return 0


def _report_train(summary: dict[str, Any]) -> None:
    metric = "test_ppl" if "test_ppl" in summary else "test_acc"
    print(f"{metric} {summary[metric]:.4f} ({summary['params']:,} parameters); model: {summary['model']}")


def cmd_train(args: argparse.Namespace) -> int:
    seeds = _seeds_arg(args)
    progress = not args.no_progress and None
    overrides = _resume_overrides(args) if args.resume else []
    cfg = arch = None
    if args.resume:
        if not args.out:
            raise UserError("--resume needs --out RUN_DIR")
        out = args.out
    else:
        arch = load_arch_arg(args)
        if args.space and args.space != arch.space:
            raise UserError(f"the architecture belongs to the {arch.space} space, not {args.space}")
        cfg = resolve_config(arch.space, args.data, args, "train")
        if args.cutout is not None:
            kind = registry.get(arch.space).task
            if kind != "images":
                raise UserError(f"--cutout applies to image classifiers, not to the {arch.space} space ({kind})")
            cfg.task.cutout = args.cutout
        if args.print_config:

            fit_model_to_arch(cfg, arch)
            print(dump_yaml(cfg), end="")
            return 0
        out = args.out or _default_out("train", arch.space)
        if dist.is_main():
            print(f"enas train: space {cfg.space}, data {cfg.dataset}, preset {cfg.preset}, run directory {out}",
                  flush=True)
    if seeds is None:
        if args.resume:
            _check_not_seeds_dir(out)
            summary = FinalTraining.resume(out, progress=progress, overrides=overrides).run()
        else:
            summary = FinalTraining(cfg, arch, out, progress=progress).run()
        if dist.is_main():
            _report_train(summary)
        return 0

    def run_one(seed: int, run_dir: Path, resume: bool) -> dict[str, Any]:
        if resume:
            training = FinalTraining.resume(run_dir, progress=progress, overrides=overrides)
            _check_seed(training.cfg.seed, seed, run_dir)
        elif cfg is not None:
            training = FinalTraining(_seed_config(cfg, seed, []), arch, run_dir, progress=progress)
        else:  # resuming several seeds, this one not started: the config and arch of a started one, with this seed
            template = _template(out, seeds)
            training = FinalTraining(_seed_config(template["config"], seed, overrides),
                                     arch_from_json(template["arch"]), run_dir, progress=progress)
        summary = training.run()
        _report_train(summary)
        return summary

    _report_seeds(run_seeds(seeds, out, run_one, resume=args.resume), out)
    return 0

