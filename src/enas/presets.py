"""Presets: ``paper`` (spec values; the choice between paper text and the authors' scripts is written next to each
value and summarised in docs/fidelity.md), ``quick`` (a short run on a workstation or one GPU) and ``demo`` (minutes
on a 2-core CPU). `make_config` builds a preset for a command (search or train) and a space.

Weight decay: the authors add ``lam * sum(w^2)`` to the loss, which is PyTorch ``weight_decay = 2 * lam``; the values
below are already converted (spec 8.6 item 2).
"""

from __future__ import annotations

import sys
from typing import Any

from enas import registry
from enas.config import (
    Config,
    apply_dict,
    flatten,
    flatten_dict,
    load_yaml,
    migrate_dict,
    parse_set,
    set_key,
    to_plain,
)
from enas.errors import ConfigError, UserError
from enas.search.controller import short_search_settings
from enas.tasks import datasets
from enas.validate import validate_config

PRESETS = ("paper", "quick", "demo")
MICRO_DEMO_EPOCHS, MACRO_DEMO_EPOCHS = 9, 16
# Keys added to a preset after configs were first stored, with the value a config stored without them ran with: a
# model file or checkpoint from before keeps its behaviour (and its weights fit) when the preset now sets another.
ADDED_KEYS = {"model.final_batch_norm": False}


def default_dataset(space: str) -> str:
    return registry.get(space).default_dataset


def check_space_data(space: str, dataset: str) -> None:
    entry = registry.get(space)
    if entry.task == "tabular":
        if not dataset.endswith(".npz"):
            got = f" (got {dataset!r})" if dataset else ""
            raise ConfigError(f"the {space} space reads tabular data: pass --data FILE.npz{got}")
        return
    accepted = datasets.names(entry.task)
    if dataset in accepted or (entry.task == "images" and datasets.is_file(dataset)):
        return
    choices = ", ".join(accepted) + (" or a FILE.npz" if entry.task == "images" else "")
    if dataset in datasets.DATASETS or datasets.is_file(dataset):
        what = "language models" if entry.task == "text" else "image classifiers"
        raise ConfigError(f"the {space} space searches {what}; use --data {choices} (got {dataset!r})")
    raise ConfigError(f"unknown dataset {dataset!r}; choose {', '.join(datasets.names())} or a FILE.npz")


def make_config(space: str, preset: str = "paper", command: str = "search", dataset: str | None = None) -> Config:
    """The preset configuration of ``command`` ("search" or "train") for ``space`` and ``dataset``.

    ``space`` is a registered name or a ``package.module:NAME`` reference (`enas.registry`); the entry's
    ``presets(preset, command)`` builds the sections, this function fills in the space, data and preset.
    """
    entry = registry.get(space)
    dataset = dataset or entry.default_dataset
    check_space_data(entry.name, dataset)
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if command not in ("search", "train"):
        raise ConfigError(f"unknown command {command!r}; presets exist for search and train")
    cfg = entry.load("presets")(preset, command)
    if not isinstance(cfg, Config) or cfg.model is None or cfg.task is None:
        raise ConfigError(f"the presets of space {entry.name!r} must return an enas Config with model and task")
    cfg.space, cfg.space_source, cfg.dataset, cfg.preset = entry.name, entry.source, dataset, preset
    if entry.task in ("images", "tabular"):
        cfg.task.dataset = dataset
    return cfg


#: Config keys that only their command-line flag may choose (a preset is built for them).
FLAG_KEYS = {"space": "--space", "space_source": "--space", "dataset": "--data", "preset": "--preset"}


def resolve(space: str, command: str, *, preset: str | None = None, dataset: str | None = None,
            config_file: str | None = None, sets: list[str] | tuple[str, ...] = (), seed: int | None = None,
            device: str | None = None) -> Config:
    """A new run's configuration, resolved once: the preset of ``command`` for ``space`` and ``dataset``, then the
    YAML file, then each ``key=value`` of ``sets``, then ``seed`` and ``device``; validated (`enas.validate`). What
    `enas search` and `enas train` run with; a resumed run's config comes from its checkpoint instead
    (`checkpoint_config`)."""
    cfg = make_config(space, preset or "paper", command, dataset)
    chosen = {key: getattr(cfg, key) for key in FLAG_KEYS}
    if config_file:
        apply_dict(cfg, load_yaml(config_file))
    for key, value in parse_set(list(sets)):
        set_key(cfg, key, value)
    for key, flag in FLAG_KEYS.items():  # the space, data and preset decide every other value: flags only
        if getattr(cfg, key) != chosen[key]:
            raise ConfigError(f"{key} is chosen with {flag}, not with --set or --config (it set {getattr(cfg, key)!r}"
                              f" for a run of {chosen[key]!r}); start a run with {flag} instead")
    if seed is not None:
        cfg.seed = seed
    if device is not None:
        cfg.device = device
    return validate_config(cfg)


def config_from_dict(raw: dict[str, Any], command: str) -> tuple[Config, list[str]]:
    """Rebuild a stored config (a plain dict, e.g. from a checkpoint) through its preset, then its stored values.

    Stored values win over the preset; keys renamed since the dict was written are migrated and keys this version
    no longer has are dropped (returned as the second element, so the caller can say which).
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("space"), str):
        raise ConfigError("the stored config is not a config written by enas (no space)")
    preset = raw.get("preset") if raw.get("preset") in PRESETS else "paper"
    registry.get(raw["space"], raw.get("space_source") or "")  # a user space is imported from where it was found
    cfg = make_config(raw["space"], preset, command, raw.get("dataset") or None)
    values, dropped = migrate_dict(raw, cfg)
    stored, known = dict(flatten_dict(values)), flatten(cfg)
    for key, old in ADDED_KEYS.items():
        if key in known and key not in stored:
            section, leaf = key.rsplit(".", 1)
            values.setdefault(section, {})[leaf] = old
    apply_dict(cfg, values)
    return cfg, dropped


def checkpoint_config(ckpt: dict[str, Any], where: str = "the checkpoint") -> Config:
    """The config of a checkpoint, rebuilt through its preset from the plain dict that it stores.

    Checkpoints store ``cfg.to_dict()`` and the command (``search`` or ``train``). Checkpoints of the first layout
    pickled the Config dataclass itself; both are rebuilt the same way, so a config field renamed or removed since
    the run started never breaks its resume (a dropped key is named in a warning).
    """
    raw = ckpt["config"]
    if not isinstance(raw, dict):  # first layout: a pickled Config
        raw = to_plain(raw)
    command = ckpt.get("command") or ("search" if "supernet" in ckpt else "train")
    try:
        cfg, dropped = config_from_dict(raw, command)
    except ConfigError as e:
        raise UserError(f"the config stored in {where} cannot be read by this version ({e}); resume it with the "
                        f"version that started it, or start a new run") from None
    if dropped:
        print(f"warning: {where} sets config keys this version no longer has, ignored: {', '.join(dropped)}",
              file=sys.stderr)
    return cfg


def shrink_image_preset(space: str, preset: str, command: str, cfg: Config) -> Config:
    """Shrink the CNN presets for ``quick`` and ``demo``."""
    model, task, search, train, controller = cfg.model, cfg.task, cfg.search, cfg.train, cfg.controller
    if preset == "quick":
        model.channels = 16 if command == "search" else 32
        if space == "micro":
            model.num_layers = 6 if command == "search" else 9
        search.epochs, train.epochs = 30, 70  # cosine cycles end at 30 and 70
        short_search_settings(controller)
        search.derive_samples = 50
        task.eval_batch_size = 500
    elif preset == "demo":
        # Minutes on a 2-core CPU: 8 channels (macro 16), 10k training images (macro 20k), no augmentation. The
        # supernets start from the choice-consistent initialisation (docs/fidelity.md), without which a fresh arch
        # per step keeps the shared weights near chance for hundreds of steps.
        is_micro = space == "micro"
        model.channels = 8
        model.num_layers = 3 if is_micro else 6
        if is_micro and command == "search":
            model.aux_head = False  # with 5 cells the auxiliary head would read the last cell: no extra signal
        search.optim.lr = 0.1  # the shared weights of a 8-16 channel supernet learn faster at 0.1 than at 0.05
        task.train_subset, task.test_subset = 12_000, 2000
        if not is_micro:  # the macro supernet is ~6x cheaper per step: twice the width, twice the data
            model.channels = 16
            task.train_subset = 22_000
        task.valid_size = 2000
        task.batch_size = task.reward_batch_size = 64
        task.eval_batch_size = 500
        task.augment = False
        task.cutout = 0
        search.epochs = train.epochs = MICRO_DEMO_EPOCHS if is_micro else MACRO_DEMO_EPOCHS
        search.optim.t0 = train.optim.t0 = search.epochs
        controller.train_steps, controller.num_aggregate = 10, 5
        short_search_settings(controller)
        # the best of 20 candidates: scoring one on the 2000 validation images costs 1-3 s
        search.derive_samples = search.derive_uniform = 20
        # BN running statistics averaged over a few hundred different archs rank archs poorly; score with batch
        # statistics (the micro supernet always uses them)
        search.reward_mode = "train"
        if not is_micro:
            # a quarter of the epochs train the shared weights under uniform archs before the controller starts:
            # Kendall tau of the demo supernet 0.04 -> 0.27 (docs/results.md, "A supernet that ranks")
            search.warmup_epochs = search.epochs // 4
        if command == "train":
            task.valid_size = 0
    return cfg
