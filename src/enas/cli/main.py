"""The `enas` command: search | derive | train | eval | export | show | bench | data | rank.

Exit status: 0 success, 2 user error (one line on stderr, no traceback), 1 internal error, 130 interrupted.

``search`` and ``train`` also run data-parallel under torchrun (docs/distributed.md): every rank runs the command,
rank 0 alone prints the reports and writes the run directory.

This module holds the parser and the entry point; the commands are implemented in `enas.cli.runs` (search, derive,
train) and `enas.cli.tools` (eval, show, export, bench, data, rank).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

from enas import registry
from enas.cli.runs import cmd_derive, cmd_search, cmd_train
from enas.cli.tools import PAPER_SPACES, cmd_bench, cmd_data, cmd_eval, cmd_export, cmd_rank, cmd_show
from enas.errors import UserError
from enas.export.model import add_parser as add_export_parser
from enas.runs import distributed as dist
from enas.runs.rundir import last_opened, resume_command
from enas.tasks import datasets


def _space_arg(value: str) -> str:
    """--space: a registered name, or package.module:NAME / path/file.py:NAME of a SpaceEntry (loaded here)."""
    try:
        return registry.get(value).name
    except UserError as e:  # argparse prefixes "argument --space: " itself
        raise argparse.ArgumentTypeError(str(e).removeprefix("--space: ")) from None


_SPACE_HELP = "search space: rnn, macro, micro, a registered name, or package.module:NAME (docs/spaces.md)"


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
    p.add_argument("--compile", action="store_true",
                   help="also time each supernet with the arch as data (model.cell=graph) under torch.compile")

    p = sub.add_parser("data", help="load (and download if needed) a dataset and print its statistics")
    p.add_argument("name", help=f"{' | '.join(datasets.names())} | FILE.npz")
    p.add_argument("--root", help="directory holding the files")

    p = sub.add_parser("rank", help="rank correlation of supernet scores and standalone training of sampled archs")
    p.add_argument("run_dir", help="a search run directory (with checkpoints/last.pt)")
    p.add_argument("--archs", type=int, required=True, metavar="K", help="distinct archs to sample (at least 2)")
    p.add_argument("--train-epochs", type=int, required=True, metavar="E",
                   help="epochs of standalone training per arch (replaces the run's train.epochs)")
    p.add_argument("--uniform", action="store_true", help="sample archs uniformly instead of from the controller")
    p.add_argument("--seed", type=int, default=None, help="seed of the sampling and the trainings (default: the run's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (epoch lines only)")
    for command in sub.choices.values():  # every command that may read an arch file or a run directory
        command.add_argument("--trust-space", action="append", metavar="MODULE:NAME",
                             help="import this space reference when an arch file or run directory names it (enas "
                                  "imports no code a file names unless asked)")
    return parser


COMMANDS = {"search": cmd_search, "derive": cmd_derive, "train": cmd_train, "eval": cmd_eval, "export": cmd_export,
            "show": cmd_show, "bench": cmd_bench, "data": cmd_data}
COMMANDS["rank"] = cmd_rank


DISTRIBUTED_COMMANDS = ("search", "train")  # the commands that run data-parallel under torchrun


class Terminated(KeyboardInterrupt):
    """SIGTERM (what a scheduler sends before preempting a job), raised where the run is, as Ctrl-C is."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # Ctrl-C, SIGTERM: the shell's 128 + signal number


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if in_main_thread else None
    try:
        with registry.trusting_only(getattr(args, "trust_space", None) or []):  # files name code: import only what
            code = _main(args)  # the user names
    except BaseException:  # an internal error: its traceback follows
        dist.destroy()
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
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
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (`Terminated`)
        terminated = isinstance(e, Terminated)
        print(f"enas: {_interrupt_message('terminated (SIGTERM)' if terminated else 'interrupted')}", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except MemoryError:
        print("enas: error: out of memory: lower the sizes (e.g. --set model.hidden=... or model.channels=...) or "
              "the batch size (--set task.batch_size=...)", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed by the reader (`enas show ... | head -1`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes it
        return 0
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


def _interrupt_message(what: str = "interrupted") -> str:
    run = last_opened()
    if run is None:
        return what
    if (run / "checkpoints" / "last.pt").is_file():
        return f"{what}; the last completed epoch is checkpointed: continue with {resume_command(run)}"
    return f"{what} before the first checkpoint of {run}: nothing to resume; run the command again"


if __name__ == "__main__":
    sys.exit(main())
