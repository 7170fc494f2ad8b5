"""The JSON description that travels inside an exported model (`describe`, see `enas.export.model`): the space, the
arch, the input and output shapes, the class count or vocabulary size and, when the training data can be read at
export time, the image normalisation or the feature standardisation and class names, or the vocabulary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from enas.build import build_task
from enas.errors import UserError

if TYPE_CHECKING:  # torch is imported where it is used: building the CLI's parser must not import it
    from torch import nn

METADATA_FORMAT = "enas-export"
IMAGE_FORMULA = "x = (pixel / 255 - mean[c]) / std[c] per channel c, pixels in [0, 255]"
STANDARDISATION_FORMULA = "x = (feature - mean[f]) / std[f] per feature f"


def is_language_model(raw: dict[str, Any]) -> bool:
    return raw["task_info"].get("vocab_size", 0) > 0


def is_tabular(raw: dict[str, Any]) -> bool:
    return raw["task_info"].get("in_features", 0) > 0


def describe(child: nn.Module, raw: dict[str, Any], cfg: Any, arch: Any, source: Path, fmt: str,
             seq_len: int | None = None, data: bool = True) -> dict[str, Any]:
    """The metadata stored with an exported model (see the module docstring of `enas.export.model`)."""

    info = raw["task_info"]
    meta: dict[str, Any] = {
        "format": METADATA_FORMAT, "version": 1, "export_format": fmt,
        "space": cfg.space, "arch": arch.to_json(), "fixed_arc": arch.to_fixed_arc(),
        "dataset": cfg.dataset, "preset": cfg.preset, "seed": cfg.seed, "source": str(source.resolve()),
        "params": sum(p.numel() for p in child.parameters()), "torch_version": torch.__version__,
    }
    if is_language_model(raw):
        steps = seq_len or cfg.task.bptt
        hidden = child.hidden_size
        meta.update({
            "kind": "language model", "vocab_size": info["vocab_size"], "hidden_size": hidden, "seq_len": steps,
            "inputs": [
                {"name": "tokens", "shape": [steps, "batch"], "dtype": "int64",
                 "note": f"word ids in [0, vocab_size); the time dimension is fixed at {steps}"},
                {"name": "hidden", "shape": ["batch", hidden], "dtype": "float32",
                 "note": "recurrent state: zeros to start, then the hidden returned by the previous window"},
            ],
            "outputs": [
                {"name": "logits", "shape": [steps, "batch", info["vocab_size"]], "dtype": "float32",
                 "note": "next-word scores (softmax over the last dimension)"},
                {"name": "next_hidden", "shape": ["batch", hidden], "dtype": "float32",
                 "note": "the state after the window, to pass as `hidden` with the next window"},
            ],
            "dynamic_dims": {"batch": "any size >= 1"},
            "usage": "logits, next_hidden = torch.export.load(path).module()(tokens, hidden)",
        })
        meta.update(_vocabulary(cfg, info["vocab_size"]) if data else
                    {"vocab": None, "vocab_note": "not stored (exported with --no-data)"})
    elif is_tabular(raw):
        f, k = info["in_features"], info["num_classes"]
        meta.update({
            "kind": "tabular classifier", "num_classes": k, "in_features": f,
            "inputs": [{"name": "features", "shape": ["batch", f], "dtype": "float32",
                        "note": "one row of features per example, standardised as `standardisation` says"}],
            "outputs": [{"name": "logits", "shape": ["batch", k], "dtype": "float32",
                         "note": "class scores (argmax: the predicted class)"}],
            "dynamic_dims": {"batch": "any size >= 1"},
            "usage": "logits = torch.export.load(path).module()(features)",
        })
        meta.update(_input_statistics(cfg, "standardisation") if data else {"class_names": None, "standardisation": {
            "in_model": False, "mean": None, "std": None, "formula": STANDARDISATION_FORMULA,
            "note": "the data pipeline standardises the features, not the model; mean and std are those of the "
                    "training rows and were not stored (exported with --no-data)"}})
    else:
        c, s, k = info["in_channels"], info["image_size"], info["num_classes"]
        meta.update({
            "kind": "image classifier", "num_classes": k, "in_channels": c, "image_size": s,
            "inputs": [{"name": "images", "shape": ["batch", c, s, s], "dtype": "float32",
                        "note": "channels first (NCHW), normalised as `normalisation` says"}],
            "outputs": [{"name": "logits", "shape": ["batch", k], "dtype": "float32",
                         "note": "class scores (argmax: the predicted class)"}],
            "dynamic_dims": {"batch": "any size >= 1"},
            "usage": "logits = torch.export.load(path).module()(images)",
        })
        meta.update(_input_statistics(cfg, "normalisation") if data else {"class_names": None, "normalisation": {
            "in_model": False, "mean": None, "std": None,
            "formula": IMAGE_FORMULA,
            "note": "the data pipeline normalises the images, not the model; mean and std are those of the "
                    "training images and were not stored (exported with --no-data)"}})
    if fmt == "onnx":
        meta["usage"] = "onnxruntime.InferenceSession(path).run(None, {" + ", ".join(
            f"'{i['name']}': ..." for i in meta["inputs"]) + "})"
    return meta


def _load_task(cfg: Any) -> Any:
    return build_task(cfg, torch.device("cpu"))


def _data_unavailable(cfg: Any, e: BaseException) -> str:
    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
    return f"the training data ({cfg.dataset}) could not be read at export time: {reason}"


def _input_statistics(cfg: Any, key: str) -> dict[str, Any]:
    """Class names and the mean / std the training pipeline scaled the inputs with: per channel for images
    (``key="normalisation"``, `enas.tasks.images`), per feature for tables (``key="standardisation"``,
    `enas.tasks.tabular`, 0 and 1 when ``task.standardize`` was off). Computed on the training part of the data,
    validation excluded; not stored in model.pt."""
    images = key == "normalisation"
    verb, what, unit = ("normalises", "images", "images") if images else ("standardises", "features", "rows")
    norm: dict[str, Any] = {"in_model": False, "formula": IMAGE_FORMULA if images else STANDARDISATION_FORMULA}
    try:
        task = _load_task(cfg)
    except (UserError, OSError) as e:
        note = _data_unavailable(cfg, e)
        print(f"warning: {note}; the export's metadata lacks the {key} statistics and class names", file=sys.stderr)
        norm.update({"mean": None, "std": None, "note": f"the data pipeline {verb} the {what}, not the model; {note}"})
        return {"class_names": None, key: norm}
    digits = 7 if images else None
    norm.update({"mean": [round(float(v), digits) if digits else float(v) for v in task.mean],
                 "std": [round(float(v), digits) if digits else float(v) for v in task.std]})
    if images or task.cfg.standardize:
        extra = "" if images else "; a constant feature has std 1"
        norm["note"] = (f"the data pipeline {verb} the {what}, not the model: apply this to your {unit} "
                        f"(statistics of the training {unit}, validation part excluded{extra})")
    else:
        norm["note"] = "task.standardize was off: the model reads the features as they are (mean 0, std 1)"
    return {"class_names": list(task.class_names), key: norm}


def _vocabulary(cfg: Any, vocab_size: int) -> dict[str, Any]:
    """The corpus vocabulary (id -> word; each line of text ends with ``<eos>``), when the corpus can be read."""
    try:
        vocab = list(_load_task(cfg).corpus.vocab)
    except (UserError, OSError) as e:
        note = _data_unavailable(cfg, e)
        print(f"warning: {note}; the export's metadata lacks the vocabulary", file=sys.stderr)
        return {"vocab": None, "vocab_note": note}
    if len(vocab) != vocab_size:
        note = f"the corpus now has {len(vocab)} words, the model was trained on {vocab_size}: vocabulary not stored"
        print(f"warning: {note}", file=sys.stderr)
        return {"vocab": None, "vocab_note": note}
    return {"vocab": vocab, "vocab_note": "word of each id; text is split on whitespace and every line ends with "
                                          "<eos>; unknown words must be mapped by the user (PTB uses <unk>)"}
