"""Presets: ``paper`` (spec values; the choice between paper text and the authors' scripts is written next to each
value and summarised in docs/fidelity.md), ``quick`` (a short run on a workstation or one GPU) and ``demo`` (minutes
on a 2-core CPU). `make_config` builds a preset for a command (search or train) and a space.

Weight decay: the authors add ``lam * sum(w^2)`` to the loss, which is PyTorch ``weight_decay = 2 * lam``; the values
below are already converted (spec 8.6 item 2).
"""

from __future__ import annotations

from typing import Any

from enas import registry
from enas.config import Config, OptimConfig, SearchConfig, TrainConfig, apply_dict, flatten, flatten_dict, migrate_dict
from enas.controller import ControllerConfig
from enas.errors import ConfigError

PRESETS = ("paper", "quick", "demo")
MICRO_DEMO_EPOCHS, MACRO_DEMO_EPOCHS = 9, 16
IMAGE_DATASETS = ("cifar10", "fashion-mnist")
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
    text = dataset == "ptb"
    if entry.task == "text" and not text:
        raise ConfigError(f"the {space} space searches language models; use --data ptb (got {dataset!r})")
    if entry.task == "images" and text:
        raise ConfigError(f"the {space} space searches image classifiers; use --data cifar10, fashion-mnist or X.npz")
    if not text and dataset not in IMAGE_DATASETS and not dataset.endswith(".npz"):
        raise ConfigError(f"unknown dataset {dataset!r}; choose ptb, cifar10, fashion-mnist or a FILE.npz")


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


# ------------------------------------------------------------------------------------------------------------------
# Recurrent cell on Penn Treebank (spec 2.1, 3.2, 4.1, 6.1)
# ------------------------------------------------------------------------------------------------------------------
def rnn_presets(preset: str, command: str) -> Config:
    from enas.spaces.rnn import RnnSpaceConfig
    from enas.tasks.text import TextTaskConfig

    model = RnnSpaceConfig()  # 12 nodes, 4 activations, highway, per-node BN in the supernet
    task = TextTaskConfig(batch_size=64, bptt=35, reward_c=80.0)
    controller = ControllerConfig(
        lstm_size=100,  # paper (authors' old PTB code: 100 too)
        temperature=5.0, tanh_constant=2.5,  # paper = old code
        entropy_weight=1e-4,  # paper (old code 1e-3)
        entropy_mode="sampled",  # authors' code: -log p(a) * p(a) of the sampled action
        lr=0.00035,  # paper (old code 0.001)
        baseline_decay=0.99,  # old code (paper silent)
        skip_weight=0.0,
        train_steps=2000, num_aggregate=1,  # paper: 2000 controller steps per epoch
    )
    search = SearchConfig(
        epochs=150,  # paper
        optim=OptimConfig(lr=20.0, momentum=0.0, nesterov=False, weight_decay=2 * 1e-7,  # paper lr 20, l2 1e-7
                          grad_clip=0.25, schedule="decay", decay=0.96, decay_start=15),  # paper: x0.96 from epoch 15
        derive_samples=100,
    )
    # Final training: the authors' corrected GPU recipe (spec 6.1, "Errata GPU"). That code adds
    # 8e-7 * sum(w^2) over every variable to the loss, i.e. PyTorch weight_decay = 2 * 8e-7.
    train = TrainConfig(
        epochs=3000,
        optim=OptimConfig(lr=20.0, momentum=0.0, nesterov=False, weight_decay=2 * 8e-7, grad_clip=0.25,
                          schedule="constant"),
        averaging=True, averaging_patience=10,
    )
    if command == "train":
        model.hidden = 800
        model.batch_norm = False
        model.init_range = 0.05
        model.dropout_word, model.dropout_emb, model.dropout_x, model.dropout_out = 0.125, 0.175, 0.725, 0.75
        model.dropout_h = 0.225
        task.variable_bptt = True
        task.activation_reg = 0.7
        task.eval_batch_size = 10
    if preset == "quick":
        model.hidden = 256 if command == "search" else 400
        model.init_range = 0.1 if model.hidden <= 300 else 0.05  # the old code's rule (spec 8.1)
        search.epochs, controller.train_steps = 20, 200
        _short_search_controller(controller)
        search.derive_samples = 50
        train.epochs = 60
    elif preset == "demo":
        # A few minutes on a 2-core CPU: a small cell on the first 300k training tokens, light dropout. The shared
        # weights use lr 3; the final training lr 10: at lr 3 a cell made only of tanh and relu nodes (the published
        # one) starts with outputs ~100x smaller than a cell with a sigmoid or identity node and stays at the
        # uniform model (test ppl 9995 after 3 epochs on 100k tokens; 683 at lr 10), and random cells train worse
        # (731/725 at lr 3, 553/581 at lr 10); the paper's lr 20 is better still for most cells (586, 518/488) but
        # sent one derived cell's loss to inf in its first epoch.
        model.hidden = 64
        model.init_range = 0.1  # the old code's rule for hidden <= 300 (spec 8.1)
        model.num_nodes = 8
        # The corrected code's space (node 0 a fixed tanh, output the mean of nodes 1..): an identity node 0 was the
        # first step of the search's collapse to identity cells, whose recurrence is unbounded. Final models keep
        # the per-node batch norm of the search (a bound on h_t): without it, lr 10 x clip 0.25 grew identity and
        # ReLU cells' recurrent gain past 1 within a few steps and their loss went to inf (docs/results.md).
        model.variant = "corrected"
        model.final_batch_norm = True
        model.dropout_word, model.dropout_x, model.dropout_h, model.dropout_out = 0.05, 0.1, 0.05, 0.1
        task.max_tokens = 300_000
        task.batch_size = task.reward_batch_size = 32
        task.eval_batch_size = 64
        search.epochs = 6
        search.optim.lr = 3.0
        train.optim.lr = 10.0
        search.optim.decay, search.optim.decay_start = 0.9, 3
        search.eval_every = 2
        controller.train_steps, controller.num_aggregate = 40, 5
        _short_search_controller(controller)
        search.derive_samples = search.derive_uniform = 16
        train.epochs = 6
        train.averaging_patience = 2
    return Config(model=model, task=task, controller=controller, search=search, train=train)


# ------------------------------------------------------------------------------------------------------------------
# Macro CNN (spec 2.2, 3.3, 4.2, 6.2): the authors' scripts, since the paper's CIFAR training paragraph is unconfirmed
# ------------------------------------------------------------------------------------------------------------------
def macro_presets(preset: str, command: str) -> Config:
    from enas.spaces.macro import MacroSpaceConfig
    from enas.tasks.images import ImageTaskConfig

    model = MacroSpaceConfig(num_layers=12, channels=36, keep_prob=0.9)
    task = ImageTaskConfig(valid_size=5000, batch_size=128, reward_batch_size=128, augment=True, cutout=0)
    controller = ControllerConfig(lstm_size=64, tanh_constant=1.5, temperature=None, entropy_weight=1e-4,
                                  entropy_mode="sampled", lr=0.001, skip_target=0.4, skip_weight=0.8,
                                  train_steps=50, num_aggregate=20, baseline_decay=0.99)
    search = SearchConfig(epochs=310, optim=OptimConfig(lr=0.05, lr_min=0.0005, t0=10, t_mul=2,
                                                        weight_decay=2 * 2.5e-4), derive_samples=100)
    train = TrainConfig(epochs=310, optim=OptimConfig(lr=0.05, lr_min=0.001, t0=10, t_mul=2, weight_decay=2 * 2e-4))
    if command == "train":
        model.channels, model.keep_prob = 96, 0.5  # the released 24-layer network's script
        task.valid_size, task.batch_size = 0, 100
    return _image_sizes("macro", preset, command, Config(model=model, task=task, controller=controller,
                                                         search=search, train=train))


# ------------------------------------------------------------------------------------------------------------------
# Micro CNN (spec 2.3, 3.4, 4.2, 6.2)
# ------------------------------------------------------------------------------------------------------------------
def micro_presets(preset: str, command: str) -> Config:
    from enas.spaces.micro import MicroSpaceConfig
    from enas.tasks.images import ImageTaskConfig

    model = MicroSpaceConfig(num_layers=6, channels=20, keep_prob=0.9, aux_head=True)
    task = ImageTaskConfig(valid_size=5000, batch_size=160, reward_batch_size=160, augment=True, cutout=0,
                           aux_weight=0.4)
    controller = ControllerConfig(lstm_size=64, tanh_constant=1.10, op_tanh_reduce=2.5, temperature=None,
                                  entropy_weight=1e-4, entropy_mode="full", lr=0.0035, skip_weight=0.0,
                                  op_bias_init=[10.0, 10.0, 0.0, 0.0, 0.0], train_steps=30, num_aggregate=10,
                                  baseline_decay=0.99)
    search = SearchConfig(epochs=150, optim=OptimConfig(lr=0.05, lr_min=0.0005, t0=10, t_mul=2,
                                                        weight_decay=2 * 1e-4), derive_samples=100)
    # the authors' micro search graph runs rewards, validation and derive scores in training mode (spec 3.4, 8.2):
    # batch statistics (which the micro supernet always uses) and the dropout before the classifier on
    search.reward_mode = "train"
    train = TrainConfig(epochs=630, optim=OptimConfig(lr=0.05, lr_min=0.0001, t0=10, t_mul=2, weight_decay=2 * 2e-4))
    if command == "train":
        model.num_layers, model.channels, model.keep_prob = 15, 36, 0.8
        model.drop_path_keep = 0.6
        task.valid_size, task.batch_size = 0, 144
        task.cutout = 16  # the paper's 2.89% needs cutout; the authors' final script leaves it off (spec 9 #13)
    return _image_sizes("micro", preset, command, Config(model=model, task=task, controller=controller,
                                                         search=search, train=train))


def _short_search_controller(controller: ControllerConfig) -> None:
    """Controller settings for searches of 10^2-10^3 samples (the `demo` and `quick` presets), where the paper's
    need 10^4 (docs/fidelity.md, measured on NAS-Bench-Graph's true scores in docs/results.md, "The controller
    alone"). Chosen on two tuning datasets by the best validation accuracy found after 200 and 500 evaluations:

    * PyTorch's Adam epsilon and a baseline started at the first reward: the authors' TF epsilon (1e-3, far above
      the gradient's RMS at these reward scales) makes every step about lr * g / 1e-3 and a baseline starting at 0
      reinforces whatever the first hundred samples were: the policy does not move;
    * Adam lr 0.05, 5 samples per update (the samples per epoch are kept), baseline decay 0.9: ten times the paper's
      updates per sample and a baseline that follows a reward which improves quickly;
    * the 10 best distinct archs so far pulled up by their log-likelihood in every update (elite weight 1);
    * logits shaped alike in every space (tanh constant 1.5, no temperature, no op tanh reduction or op bias), so
      the settings carry to any space and vocabulary size.
    """
    samples = controller.train_steps * controller.num_aggregate
    controller.num_aggregate = 5
    controller.train_steps = max(1, samples // controller.num_aggregate)
    controller.lr, controller.baseline_decay = 0.05, 0.9
    controller.elite_size, controller.elite_weight = 10, 1.0
    controller.tanh_constant, controller.temperature = 1.5, None
    controller.op_tanh_reduce, controller.op_bias_init = 1.0, None
    controller.adam_eps, controller.adam_tf_eps = 1e-8, False
    controller.baseline_start = "first"


def _image_sizes(space: str, preset: str, command: str, cfg: Config) -> Config:
    """Shrink the CNN presets for ``quick`` and ``demo``."""
    model, task, search, train, controller = cfg.model, cfg.task, cfg.search, cfg.train, cfg.controller
    if preset == "quick":
        model.channels = 16 if command == "search" else 32
        if space == "micro":
            model.num_layers = 6 if command == "search" else 9
        search.epochs, train.epochs = 30, 70  # cosine cycles end at 30 and 70
        _short_search_controller(controller)
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
        _short_search_controller(controller)
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
