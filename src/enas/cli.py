"""The `enas` command: search | derive | train | eval | export | show | bench | data | rank.

Exit status: 0 success, 2 user error (one line on stderr, no traceback), 1 internal error, 130 interrupted.

``search`` and ``train`` also run data-parallel under torchrun (docs/distributed.md): every rank runs the command,
rank 0 alone prints the reports and writes the run directory.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from enas import distributed as dist
from enas import registry
from enas.errors import UserError
from enas.registry import text_space

PAPER_SPACES = ("rnn", "macro", "micro")  # the spaces `enas bench` measures


def _space_arg(value: str) -> str:
    """--space: a registered name, or package.module:NAME / path/file.py:NAME of a SpaceEntry (loaded here)."""
    try:
        return registry.get(value).name
    except UserError as e:  # argparse prefixes "argument --space: " itself
        raise argparse.ArgumentTypeError(str(e).removeprefix("--space: ")) from None


_SPACE_HELP = "search space: rnn, macro, micro, a registered name, or package.module:NAME (docs/spaces.md)"
DEFAULT_INFO = {  # data shapes assumed by `enas show` when no --data is given
    "ptb": {"vocab_size": 10000},
    "cifar10": {"in_channels": 3, "image_size": 32, "num_classes": 10},
    "fashion-mnist": {"in_channels": 1, "image_size": 28, "num_classes": 10},
}


def _common_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None,
                   help="paper (the spec's values; the default), quick, or demo (minutes on a CPU)")
    p.add_argument("--config", metavar="YAML", help="a YAML file of config keys applied over the preset")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one dotted config key (repeatable); --print-config lists the keys")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--device", default=None, help="auto (default), cpu or cuda")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as YAML and exit")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit status 2), like every other error of the command."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"enas: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="enas", description="Efficient Neural Architecture Search (ENAS).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("search", help="search an architecture with the ENAS controller")
    p.add_argument("--space", type=_space_arg, metavar="SPACE", help=_SPACE_HELP)
    p.add_argument("--data", help="ptb | cifar10 | fashion-mnist | FILE.npz (default: ptb for rnn, cifar10 for "
                                  "image spaces; tabular spaces need a FILE.npz)")
    p.add_argument("--out", help="run directory (default runs/search-SPACE-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--controller", choices=("enas", "random"), default=None,
                   help="enas (default): the LSTM controller trained with REINFORCE; random: uniformly sampled "
                        "archs and no controller phase (random search with weight sharing)")
    p.add_argument("--seeds", metavar="S1,S2,...",
                   help="one run per seed into OUT/seed-N, then OUT/seeds.csv and OUT/seeds.json (mean and std)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines only)")
    _common_config_args(p)

    p = sub.add_parser("derive", help="sample and score candidate archs of a finished or stopped search")
    p.add_argument("run_dir", help="a search run directory")
    p.add_argument("--samples", type=int, default=None, help="candidates to score (default: the run's setting)")

    p = sub.add_parser("train", help="train one architecture from scratch and test it")
    p.add_argument("arch", nargs="?", help="ARCH.json (or use --fixed-arc with --space)")
    p.add_argument("--fixed-arc", help="the authors' integer notation instead of an arch file")
    p.add_argument("--space", type=_space_arg, metavar="SPACE", help="space of --fixed-arc; " + _SPACE_HELP)
    p.add_argument("--data", help="dataset (as for search)")
    p.add_argument("--out", help="run directory (default runs/train-SPACE-TIME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--cutout", type=int, default=None, metavar="N",
                   help="CNN spaces: cutout square size (16 in the micro paper preset; 0 = off)")
    p.add_argument("--seeds", metavar="S1,S2,...",
                   help="one run per seed into OUT/seed-N, then OUT/seeds.csv and OUT/seeds.json (mean and std)")
    p.add_argument("--no-progress", action="store_true")
    _common_config_args(p)

    p = sub.add_parser("eval", help="recompute the test metrics of a trained model")
    p.add_argument("model", help="a train run directory or its model.pt")
    p.add_argument("--data", help="dataset (default: the one it was trained on)")
    p.add_argument("--split", default="test", choices=("test", "valid"))
    p.add_argument("--device", default="auto")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (e.g. task.root=DIR)")

    from enas.export import add_parser as add_export_parser

    add_export_parser(sub)

    p = sub.add_parser("show", help="print and draw an architecture with the parameter count of its final model")
    p.add_argument("arch", nargs="?", help="ARCH.json")
    p.add_argument("--fixed-arc", help="the authors' integer notation instead of a file")
    p.add_argument("--space", type=_space_arg, metavar="SPACE", help="space of --fixed-arc; " + _SPACE_HELP)
    p.add_argument("--data", help="dataset whose shapes the parameter count assumes")
    p.add_argument("-o", "--output", help="write a picture (PNG)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--preset", default="paper")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")

    p = sub.add_parser("bench", help="throughput ratios of supernets against plain baselines and their children")
    p.add_argument("--space", choices=PAPER_SPACES, action="append", help="space(s) to benchmark (default: all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--size", choices=("target", "small"), default="target",
                   help="target: the sizes of the performance targets; small: a seconds-long smoke run")
    p.add_argument("--json", dest="json_out", metavar="FILE", help="also write the rows as JSON ({\"rows\": [...]})")
    p.add_argument("--steps", type=int, default=20, help="timed rounds (each runs every workload once; default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")

    p = sub.add_parser("data", help="load (and download if needed) a dataset and print its statistics")
    p.add_argument("name", help="ptb | cifar10 | fashion-mnist | FILE.npz")
    p.add_argument("--root", help="directory holding the files")

    p = sub.add_parser("rank", help="rank correlation of supernet scores and standalone training of sampled archs")
    p.add_argument("run_dir", help="a search run directory (with checkpoints/last.pt)")
    p.add_argument("--archs", type=int, required=True, metavar="K", help="distinct archs to sample (at least 2)")
    p.add_argument("--train-epochs", type=int, required=True, metavar="E",
                   help="epochs of standalone training per arch (replaces the run's train.epochs)")
    p.add_argument("--uniform", action="store_true", help="sample archs uniformly instead of from the controller")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampling and the trainings (default: the run's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines only)")
    return parser


def resolve_config(space: str, dataset: str | None, args: argparse.Namespace, command: str):
    from enas.config import apply_dict, load_yaml, parse_set, set_key
    from enas.presets import make_config

    cfg = make_config(space, args.preset or "paper", command, dataset)
    if args.config:
        apply_dict(cfg, load_yaml(args.config))
    for key, value in parse_set(args.sets):
        set_key(cfg, key, value)
    if args.seed is not None:
        cfg.seed = args.seed
    if args.device is not None:
        cfg.device = args.device
    from enas.validate import validate_config

    return validate_config(cfg)


def _resume_overrides(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """What a resumed run was asked to change: --config and --set keys, and --space, --data, --preset, --seed,
    --device, --cutout when given. `enas.config.apply_resume_overrides` applies the ones that may change and refuses
    the others with one line."""
    from enas.config import flatten_dict, load_yaml, parse_set

    pairs = flatten_dict(load_yaml(args.config)) if args.config else []
    pairs += parse_set(args.sets)
    flags = (("space", "space"), ("data", "dataset"), ("preset", "preset"), ("seed", "seed"), ("device", "device"),
             ("cutout", "task.cutout"))
    pairs += [(key, getattr(args, flag)) for flag, key in flags if getattr(args, flag, None) is not None]
    return pairs


def _default_out(command: str, space: str) -> str:
    return str(Path("runs") / f"{command}-{space}-{time.strftime('%Y%m%d-%H%M%S')}")


def _load_arch_arg(args: argparse.Namespace):
    from enas.arch import load_arch, parse_fixed_arc

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
    from enas.seeds import parse_seeds

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
    from enas.runs import RunDir
    from enas.seeds import first_checkpointed

    run_dir = first_checkpointed(out, seeds)
    if run_dir is None:
        raise UserError(f"nothing to resume in {out}; start without --resume")
    return RunDir(run_dir, resume=True, lock=False).load_checkpoint()


def _seed_config(base, seed: int, overrides: list[tuple[str, Any]]):
    from enas.config import set_key

    cfg = copy.deepcopy(base)
    for key, value in overrides:
        set_key(cfg, key, value)
    cfg.seed = seed
    return cfg


def _check_not_seeds_dir(out: str) -> None:
    """``--resume --out OUT`` without --seeds on a directory of several seeds: say how to resume them."""
    from enas.runs import CHECKPOINT

    path = Path(out)
    if not (path / "checkpoints" / CHECKPOINT).is_file() and any(path.glob(f"seed-*/checkpoints/{CHECKPOINT}")):
        raise UserError(f"{out} holds one run per seed: resume them with --seeds S1,S2,... --resume --out {out}, "
                        f"or one of them with --resume --out {out}/seed-N")


def _report_seeds(result: dict[str, Any], out: str) -> None:
    from enas.seeds import describe

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
    from enas.config import dump_yaml
    from enas.search import Search

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
            summary = Search(None, out, resume=True, progress=progress, overrides=overrides).run()
        else:
            summary = Search(cfg, out, progress=progress).run()
        if dist.is_main():
            _report_search(summary)
        return 0

    from enas.seeds import run_seeds

    def run_one(seed: int, run_dir: Path, resume: bool) -> dict[str, Any]:
        if resume:
            search = Search(None, run_dir, resume=True, progress=progress, overrides=overrides)
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
    from enas.build import autocast
    from enas.runs import CHECKPOINT
    from enas.search import Search

    run = Path(args.run_dir)
    if not run.is_dir():
        raise UserError(f"{run} is not a directory; pass the run directory of `enas search`")
    if not (run / "checkpoints" / CHECKPOINT).is_file():
        raise UserError(f"{run} has no checkpoint (checkpoints/{CHECKPOINT}); pass a search run that finished at "
                        "least one epoch")
    if args.samples is not None and args.samples < 1:
        raise UserError(f"--samples must be at least 1, got {args.samples}")
    try:
        search = Search(None, run, resume=True, progress=None)
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
    from enas.config import dump_yaml
    from enas.train import FinalTraining

    seeds = _seeds_arg(args)
    progress = not args.no_progress and None
    overrides = _resume_overrides(args) if args.resume else []
    cfg = arch = None
    if args.resume:
        if not args.out:
            raise UserError("--resume needs --out RUN_DIR")
        out = args.out
    else:
        arch = _load_arch_arg(args)
        if args.space and args.space != arch.space:
            raise UserError(f"the architecture belongs to the {arch.space} space, not {args.space}")
        cfg = resolve_config(arch.space, args.data, args, "train")
        if args.cutout is not None:
            kind = registry.get(arch.space).task
            if kind != "images":
                raise UserError(f"--cutout applies to image classifiers, not to the {arch.space} space ({kind})")
            cfg.task.cutout = args.cutout
        if args.print_config:
            from enas.build import fit_model_to_arch

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
            summary = FinalTraining(None, None, out, resume=True, progress=progress, overrides=overrides).run()
        else:
            summary = FinalTraining(cfg, arch, out, progress=progress).run()
        if dist.is_main():
            _report_train(summary)
        return 0

    from enas.arch import arch_from_json
    from enas.seeds import run_seeds

    def run_one(seed: int, run_dir: Path, resume: bool) -> dict[str, Any]:
        if resume:
            training = FinalTraining(None, None, run_dir, resume=True, progress=progress, overrides=overrides)
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


def cmd_eval(args: argparse.Namespace) -> int:
    from enas.config import parse_set
    from enas.train import evaluate_model

    metrics = evaluate_model(args.model, args.data, args.device, parse_set(args.sets), split=args.split)
    print(json.dumps({f"{args.split}_{k}": v for k, v in metrics.items()}))
    return 0


def show_info(arch, args: argparse.Namespace) -> dict[str, Any]:
    """The JSON object of `enas show --json`: space, arch, fixed_arc, params and the sizes assumed."""
    import torch

    from enas.build import build_space, fit_model_to_arch
    from enas.config import parse_set, set_key
    from enas.presets import default_dataset, make_config
    from enas.spaces.base import TaskInfo

    dataset = args.data or default_dataset(arch.space)
    cfg = make_config(arch.space, args.preset, "train", dataset)
    for key, value in parse_set(args.sets):
        set_key(cfg, key, value)
    fit_model_to_arch(cfg, arch)
    if dataset in DEFAULT_INFO:
        info = TaskInfo(**DEFAULT_INFO[dataset])
    else:
        from enas.build import build_task

        info = build_task(cfg, torch.device("cpu")).info
    with torch.device("meta"):  # count parameters without allocating them
        model = build_space(cfg).build_child(arch, info, final=True)
    params = sum(p.numel() for p in model.parameters())
    out: dict[str, Any] = {"space": arch.space, "arch": arch.to_json(), "fixed_arc": arch.to_fixed_arc(),
                           "params": params, "preset": args.preset, "dataset": dataset}
    out["sizes"] = {k: getattr(cfg.model, k) for k in registry.get(arch.space).size_keys if hasattr(cfg.model, k)}
    if text_space(arch.space):
        out["hidden"] = getattr(cfg.model, "hidden", None)
        out["vocab_size"] = info.vocab_size
    elif registry.get(arch.space).task == "tabular":
        out["in_features"], out["num_classes"] = info.in_features, info.num_classes
    else:
        out["channels"], out["layers"] = getattr(cfg.model, "channels", None), getattr(cfg.model, "num_layers", None)
    return out


def cmd_show(args: argparse.Namespace) -> int:
    arch = _load_arch_arg(args)
    info = show_info(arch, args)
    picture = None
    if args.output:
        from enas.viz import draw_arch

        picture = str(draw_arch(arch, args.output))
        info["picture"] = picture
    if args.json:
        print(json.dumps(info))
        return 0
    print(arch.describe())
    sizes = ", ".join(f"{k} {v}" for k, v in info["sizes"].items()) or "default sizes"
    print(f"fixed_arc: {info['fixed_arc']}")
    print(f"final model ({args.preset} preset, {sizes}, {info['dataset']}): {info['params']:,} parameters")
    if picture:
        print(f"picture: {picture}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from enas.bench import run_benchmarks

    if args.steps < 1 or args.warmup < 0:
        raise UserError("--steps must be at least 1 and --warmup at least 0")
    out = Path(args.json_out) if args.json_out else None
    if out is not None:  # find out now, not after minutes of benchmarking
        existed = out.exists()
        try:
            with out.open("a"):
                pass
        except OSError as e:
            raise UserError(f"cannot write --json {out} ({e.strerror or e}); pass a writable path") from None
        if not existed:
            out.unlink()
    results = run_benchmarks(args.space or list(PAPER_SPACES), device=args.device, size=args.size,
                             warmup=args.warmup, steps=args.steps)
    if out is not None:
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"written: {out}")
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    if args.name == "ptb":
        from enas.tasks.text import load_ptb

        corpus = load_ptb(root=args.root)
        print(json.dumps({"dataset": "ptb", "vocab": len(corpus.vocab),
                          **{f"{s}_tokens": len(getattr(corpus, s)) for s in ("train", "valid", "test")}}))
        return 0
    from enas.tasks.image_data import load_image_dataset

    ds = load_image_dataset(args.name, root=args.root)
    print(json.dumps({"dataset": ds.name, "train": tuple(ds.train_images.shape), "test": tuple(ds.test_images.shape),
                      "classes": ds.num_classes}))
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    from enas.rank import rank_run

    r = rank_run(args.run_dir, args.archs, args.train_epochs, uniform=args.uniform, seed=args.seed,
                 progress=not args.no_progress and None)

    def fmt(v: float) -> str:
        return "undefined" if v != v else f"{v:.3f}"  # NaN: degenerate scores

    written = ", ".join(str(Path(args.run_dir) / f) for f in ("rank.csv", "rank.json", "rank.png")
                        if f != "rank.png" or r["picture"])
    print(f"Kendall tau {fmt(r['kendall_tau'])}, Spearman rho {fmt(r['spearman_rho'])} over {r['pairs']} archs "
          f"({r['policy']} policy, {r['train_epochs']} epochs each); written: {written}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from enas.export import cmd_export as run

    return run(args)


COMMANDS = {"search": cmd_search, "derive": cmd_derive, "train": cmd_train, "eval": cmd_eval, "export": cmd_export,
            "show": cmd_show, "bench": cmd_bench, "data": cmd_data}
COMMANDS["rank"] = cmd_rank


DISTRIBUTED_COMMANDS = ("search", "train")  # the commands that run data-parallel under torchrun


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _main(args)
    except BaseException:  # an internal error: its traceback follows
        dist.destroy()
        raise
    if code != 0 and dist.active():
        # A failed data-parallel run: a peer may be gone already, and gloo's teardown then aborts the process
        # ("terminate called without an active exception", exit -6) after the one-line error. Leave at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    dist.destroy()  # leave the process group (nothing in one process)
    return code


def _main(args: argparse.Namespace) -> int:
    try:
        if dist.requested():  # started by torchrun as one of several processes
            if args.command not in DISTRIBUTED_COMMANDS:
                raise UserError(f"enas {args.command} runs as one process: start it without torchrun (only search "
                                "and train run data-parallel)")
            dist.init()
        return COMMANDS[args.command](args)
    except UserError as e:
        who = f" (rank {dist.rank()})" if not dist.is_main() else ""
        print(f"enas: error{who}: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"enas: {_interrupt_message()}", file=sys.stderr)
        return 130
    except MemoryError:
        print("enas: error: out of memory: lower the sizes (e.g. --set model.hidden=... or model.channels=...) or "
              "the batch size (--set task.batch_size=...)", file=sys.stderr)
        return 2
    except OSError as e:  # a disk, a permission, a path that vanished: name the file and the reason
        where = f" {e.filename}" if e.filename else ""
        print(f"enas: error: cannot access{where} ({e.strerror or e}); check the path, its permissions and the free "
              "disk space", file=sys.stderr)
        return 2
    except RuntimeError as e:  # the allocators' out-of-memory errors (CPU and CUDA) are RuntimeErrors
        text = str(e)
        if "out of memory" in text.lower() or "can't allocate memory" in text or "not enough memory" in text:
            print("enas: error: out of memory on the device: lower the sizes (e.g. --set model.hidden=... or "
                  "model.channels=...) or the batch size (--set task.batch_size=...)", file=sys.stderr)
            return 2
        raise


def _interrupt_message() -> str:
    from enas.runs import last_opened

    run = last_opened()
    if run is None:
        return "interrupted"
    if (run / "checkpoints" / "last.pt").is_file():
        return f"interrupted; the last completed epoch is checkpointed: rerun with --resume --out {run}"
    return f"interrupted before the first checkpoint of {run}: nothing to resume; run the command again"


if __name__ == "__main__":
    sys.exit(main())
