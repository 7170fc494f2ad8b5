"""`enas export`: a trained child network as a standalone file that loads and runs without this package.

Two formats:

* ``torch-export`` (``.pt2``): a `torch.export` program, loaded with ``torch.export.load(path).module()``;
* ``onnx`` (``.onnx``): the same program converted by `torch.onnx.export` (its dynamo exporter needs the ``onnx``
  and ``onnxscript`` packages: ``pip install onnx onnxscript``, or this package's ``onnx`` extra), run with e.g.
  onnxruntime.

The exported network is the child in eval mode (no dropout, batch norm with its running statistics, no auxiliary
head) behind a plain-tensor interface:

* image classifiers: ``logits = model(images)``, images (B, C, S, S) float32, logits (B, K);
* tabular classifiers: ``logits = model(features)``, features (B, F) float32 (standardised), logits (B, K);
* language models: ``logits, hidden = model(tokens, hidden)``, tokens (T, B) int64, hidden (B, H) float32 (zeros
  to start a sequence; feed the returned state to the next window), logits (T, B, V) (softmax over V gives the
  next-word probabilities).

The batch dimension B is dynamic. The language model's window length T is fixed at export (the cell is unrolled
over time; default: the training ``bptt``): run longer texts window by window, carrying ``hidden``.

A JSON description of the model (`METADATA_NAME`, written by `enas.export.describe.describe`) travels inside the
file: the space, the arch, the input and output shapes, the class count or vocabulary size and, when the training
data can be read at export time, the image normalisation or the feature standardisation (applied by the data
pipeline, not by the model) and class names, or the vocabulary. Read it
with ``extra = {"enas.json": ""}; torch.export.load(path, extra_files=extra); json.loads(extra["enas.json"])``, or
from the ONNX model's ``metadata_props`` (key ``enas``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from enas.build import build_space
from enas.errors import UserError
from enas.export.describe import describe, is_language_model, is_tabular
from enas.runs.environment import resolve_device
from enas.runs.rundir import atomic_write_bytes
from enas.spaces.base import TaskInfo
from enas.train.final import load_model_file

if TYPE_CHECKING:  # torch is imported where it is used: building the CLI's parser must not import it
    import torch
    from torch import Tensor, nn

FORMATS = {"torch-export": ".pt2", "onnx": ".onnx"}
METADATA_NAME = "enas.json"  # extra file of the .pt2; metadata_props key "enas" of the .onnx
EXAMPLE_BATCH = 2  # batch of the example input (not 1: a size-1 example would fix the batch dimension at 1)


MAX_SEQ_LEN = 100_000  # the exported program unrolls the window: longer ones take memory without bound

def wrap(child: nn.Module, language_model: bool, tabular: bool = False) -> nn.Module:
    """The eval-mode ``child`` behind a plain-tensor forward: ``logits = model(images)`` for an image classifier
    (no auxiliary head), ``logits = model(features)`` for a tabular classifier (``tabular=True``),
    ``logits, next_hidden = model(tokens, hidden)`` for a language model (no extras)."""

    class ImageClassifier(nn.Module):
        def __init__(self, child: nn.Module):
            super().__init__()
            self.child = child

        def forward(self, images: Tensor) -> Tensor:
            """images (B, C, S, S) normalised float32 -> logits (B, K)."""
            return self.child(images)[0]

    class TabularClassifier(nn.Module):
        def __init__(self, child: nn.Module):
            super().__init__()
            self.child = child

        def forward(self, features: Tensor) -> Tensor:
            """features (B, F) standardised float32 -> logits (B, K)."""
            return self.child(features)[0]

    class LanguageModel(nn.Module):
        def __init__(self, child: nn.Module):
            super().__init__()
            self.child = child

        def forward(self, tokens: Tensor, hidden: Tensor) -> tuple[Tensor, Tensor]:
            """tokens (T, B) int64, hidden (B, H) -> logits (T, B, V), next hidden (B, H)."""
            logits, hidden, _ = self.child(tokens, hidden)
            return logits, hidden

    cls = LanguageModel if language_model else TabularClassifier if tabular else ImageClassifier
    return cls(child).eval()


# ---------------------------------------------------------------------------------------------------------------------
# inputs: the model file and the output path
# ---------------------------------------------------------------------------------------------------------------------


def resolve_source(source: str | Path) -> Path:
    """The model.pt behind ``source`` (a training run directory or a model file), with one line for each way it can
    be wrong."""
    path = Path(source)
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run directory of `enas train` or its model.pt")
    if path.is_dir() and not (path / "model.pt").is_file():
        if _is_search_run(path):
            raise UserError(f"{path} is a search run, which holds no trained model: train its arch with "
                            f"`enas train {path / 'arch.json'}` and export that run")
        if (path / "checkpoints").is_dir():
            raise UserError(f"{path} holds no model.pt yet (an unfinished training?): finish it with "
                            f"`enas train --resume --out {path}` and export again")
        raise UserError(f"no model at {path / 'model.pt'}; pass a run directory of `enas train` or its model.pt")
    return path / "model.pt" if path.is_dir() else path


def _is_search_run(path: Path) -> bool:
    if (path / "candidates.csv").is_file() or (path / "uniform_candidates.csv").is_file():
        return True
    with contextlib.suppress(OSError, ValueError, AttributeError):
        if json.loads((path / "summary.json").read_text()).get("command") == "search":
            return True
    with contextlib.suppress(OSError):
        with open(path / "metrics.jsonl") as f:
            for _, line in zip(range(50), f):  # a search logs sampled archs and controller statistics
                if '"kind": "arch"' in line or '"controller_' in line:
                    return True
    return False


def default_output(model_path: Path, fmt: str) -> Path:
    """``RUN/model.pt2`` (or ``.onnx``): the model file's name with the format's suffix, next to it."""
    return model_path.with_suffix(FORMATS[fmt])


def check_output(out: Path, fmt: str = "torch-export") -> None:
    """Refuse an output path that cannot be written, before any work is done."""
    if out.is_dir():
        example = out / f"model{FORMATS[fmt]}"
        raise UserError(f"the output {out} is a directory; give a file to write, e.g. -o {example}")
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {out}: {parent} is a file, not a directory; choose another output path (-o)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {out}: the directory {parent} is not writable; choose another output path "
                        "(-o)")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; use {' or '.join(FORMATS)}")
    if fmt == "onnx":
        missing = [name for name in ("onnx", "onnxscript") if not _importable(name)]
        if missing:
            raise UserError(f"the onnx format needs the {' and '.join(missing)} package{'s' * (len(missing) > 1)}: "
                            "pip install onnx onnxscript (this package's `onnx` extra), or use --format torch-export")


def _importable(name: str) -> bool:

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------------------------------------------------------------
# the child and its export
# ---------------------------------------------------------------------------------------------------------------------


def load_child(source: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any], Any, Any]:
    """The trained child of ``source`` (run directory or model.pt) in eval mode on ``device``
    -> (child, raw model-file dict, config, arch)."""

    raw, cfg, arch = load_model_file(source)
    info = TaskInfo(**raw["task_info"])
    child = build_space(cfg).build_child(arch, info, final=True)
    try:
        child.load_state_dict(raw["state_dict"])
    except RuntimeError as e:
        raise UserError(f"the weights in {source} do not fit the network this version builds for its arch "
                        f"({str(e).splitlines()[0]})") from e
    return child.to(device).eval(), raw, cfg, arch


def export_program(child: nn.Module, raw: dict[str, Any], cfg: Any, seq_len: int | None = None,
                   device: str | torch.device = "cpu") -> torch.export.ExportedProgram:
    """`torch.export.export` of the eval-mode ``child`` behind `wrap`'s plain-tensor forward, with a dynamic
    batch dimension (the language model's window length is fixed at ``seq_len``)."""

    info = raw["task_info"]
    batch = torch.export.Dim("batch", min=1)
    if is_language_model(raw):
        if hasattr(child, "batched_weight_grads"):
            # The fast cell's custom autograd Functions (batched weight gradients) and its out= products serve
            # training only; with this flag and gradients enabled the cell runs its plain-autograd path, the same
            # numbers as one functional matmul per node group (see enas.spaces.rnn.cell.run_cell).
            child.batched_weight_grads = False
        wrapper = wrap(child, language_model=True)
        steps = seq_len or cfg.task.bptt
        example = (torch.zeros(steps, EXAMPLE_BATCH, dtype=torch.int64, device=device),
                   torch.zeros(EXAMPLE_BATCH, child.hidden_size, device=device))
        dynamic = {"tokens": {1: batch}, "hidden": {0: batch}}
    elif is_tabular(raw):
        wrapper = wrap(child, language_model=False, tabular=True)
        example = (torch.zeros(EXAMPLE_BATCH, info["in_features"], device=device),)
        dynamic = {"features": {0: batch}}
    else:
        wrapper = wrap(child, language_model=False)
        size = info["image_size"]
        example = (torch.zeros(EXAMPLE_BATCH, info["in_channels"], size, size, device=device),)
        dynamic = {"images": {0: batch}}
    with _quiet(), torch.enable_grad():  # enable_grad: see the cell's plain path above
        return torch.export.export(wrapper, example, dynamic_shapes=dynamic)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' warnings about their own internals (deprecations, optional packages)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.filterwarnings("ignore", message=".*shares the same shape constraints")  # onnx: "batch" twice
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def export_model(source: str | Path, fmt: str = "torch-export", out: str | Path | None = None, *,
                 device: str = "cpu", seq_len: int | None = None, data: bool = True) -> Path:
    """Write the trained child of ``source`` (a training run directory or its model.pt) as ``fmt``
    ("torch-export" or "onnx") to ``out`` (default: the model file's name with ``.pt2`` / ``.onnx``, next to it);
    returns the path written.

    ``seq_len``: the language model's window length (default: the training bptt). ``data=False`` does not read the
    training data, so the metadata lacks the image normalisation or feature standardisation statistics, class names
    or vocabulary.
    """
    return _export(source, fmt, out, device, seq_len, data)[0]


def _export(source: str | Path, fmt: str, out: str | Path | None, device: str, seq_len: int | None,
            data: bool) -> tuple[Path, dict[str, Any]]:

    check_format(fmt)
    model_path = resolve_source(source)
    out = Path(out) if out is not None else default_output(model_path, fmt)
    check_output(out, fmt)
    if out.resolve() == model_path.resolve():
        raise UserError(f"the output {out} is the model file itself; choose another output path (-o)")
    if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int)
                                or not 1 <= seq_len <= MAX_SEQ_LEN):
        raise UserError(f"--seq-len must be an integer in 1..{MAX_SEQ_LEN}, got {seq_len!r}")
    dev = resolve_device(device)
    child, raw, cfg, arch = load_child(model_path, dev)
    if seq_len is not None and not is_language_model(raw):
        kind = "a tabular classifier" if is_tabular(raw) else "an image classifier"
        raise UserError(f"--seq-len applies to language models; {model_path} holds {kind} "
                        f"({cfg.space} space); drop --seq-len")
    meta = describe(child, raw, cfg, arch, model_path, fmt, seq_len, data)
    program = export_program(child, raw, cfg, seq_len, dev)
    text = json.dumps(meta, indent=1)
    try:
        if fmt == "torch-export":

            atomic_write_bytes(out, lambda f: torch.export.save(program, f, extra_files={METADATA_NAME: text}))
        else:
            _write_onnx(program, meta, text, out)
    except OSError as e:
        raise UserError(f"cannot write {out} ({e.strerror or e}); check the path, its permissions and the free disk "
                        "space") from e
    return out, meta


def _write_onnx(program: torch.export.ExportedProgram, meta: dict[str, Any], text: str, out: Path) -> None:
    names = {"input_names": [i["name"] for i in meta["inputs"]], "output_names": [o["name"] for o in meta["outputs"]]}
    dynamic = {i["name"]: {d: "batch" for d, size in enumerate(i["shape"]) if size == "batch"} for i in meta["inputs"]}
    with _quiet():
        onnx_program = torch.onnx.export(program, (), dynamo=True, external_data=False, verbose=False,
                                         dynamic_shapes=dynamic, **names)
    onnx_program.model.metadata_props["enas"] = text
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix="." + out.name, suffix=".tmp")
    os.close(fd)
    try:
        onnx_program.save(tmp, external_data=False)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------------------------------


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``enas export`` to the CLI's subparsers; run it with `cmd_export`."""
    p = sub.add_parser("export", help="write a trained model as a standalone file (torch.export or ONNX)")
    p.add_argument("model", help="a train run directory or its model.pt")
    p.add_argument("--format", dest="fmt", choices=tuple(FORMATS), default="torch-export",
                   help="torch-export (default): a .pt2 for torch.export.load; onnx: needs the onnx and onnxscript "
                        "packages")
    p.add_argument("-o", "--output", help="file to write (default: model.pt2 or model.onnx next to model.pt)")
    p.add_argument("--seq-len", type=int, default=None, metavar="T",
                   help="language models: the fixed window length of the export (default: the training bptt)")
    p.add_argument("--device", default="cpu",
                   help="device the exported program runs on: cpu (default) or cuda")
    p.add_argument("--no-data", action="store_true",
                   help="do not read the training data (the metadata then lacks the image normalisation, the "
                        "feature standardisation, class names or vocabulary)")
    return p


def cmd_export(args: argparse.Namespace) -> int:
    out, meta = _export(args.model, args.fmt, args.output, args.device, args.seq_len, not args.no_data)
    inputs = ", ".join(i["name"] for i in meta["inputs"])
    if args.fmt == "onnx":
        how = (f"onnxruntime.InferenceSession('{out}').run(None, {{...}}) with inputs {inputs}; metadata: "
               f"onnx.load('{out}').metadata_props, key 'enas'")
    else:
        how = (f"torch.export.load('{out}').module()({inputs}); metadata: extra = {{'{METADATA_NAME}': ''}}; "
               f"torch.export.load('{out}', extra_files=extra)")
    print(f"written: {out} ({meta['kind']}, {args.fmt}, shapes in its metadata); load it with {how}")
    return 0
