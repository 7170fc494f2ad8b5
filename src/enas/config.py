"""Typed run configuration: dataclasses, presets, YAML files and ``--set key=value`` overrides.

A `Config` holds everything a command needs: which space and data, the network sizes (``model``), the task
(``task``), the controller, the search loop (``search``) and the final-training recipe (``train``). It is resolved
in this order: preset (`enas.presets`) <- YAML file <- ``--set`` flags, and written to the run directory as
``config.yaml``. Keys are dotted paths of the resolved config (``enas search --print-config`` lists them).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import yaml

from enas import registry
from enas.errors import ConfigError
from enas.kernels import KernelsConfig
from enas.kernels.compiled import OLD_CELL_NAMES
from enas.search.controller import ControllerConfig

SCHEDULES = ("cosine", "decay", "constant")
REWARD_MODES = ("eval", "train")
SCORES = ("metric", "loss")  # search.score (enas.search.scoring)
PRECISIONS = ("auto", "fp32", "bf16")


class Section(Protocol):
    """A section of keys: a dataclass instance. The model and task sections are the classes their space's presets
    build (`RnnSpaceConfig`, `ImageTaskConfig`, a user space's own); a section with a ``validate()`` method checks
    its own values with it (`enas.validate.validate_config` calls it)."""

    __dataclass_fields__: ClassVar[dict[str, Any]]


def check_int(key: str, value: Any, low: int = 0) -> None:
    """`ConfigError` unless ``value`` is an integer (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}")


def check_number(key: str, value: Any, low: float | None = None, high: float | None = None, open_low: bool = False,
                 open_high: bool = False) -> None:
    """`ConfigError` unless ``value`` is a finite number within the bounds (open or closed)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if low is not None and (value <= low if open_low else value < low):
        raise ConfigError(f"{key} must be {'>' if open_low else '>='} {low}, got {value!r}")
    if high is not None and (value >= high if open_high else value > high):
        raise ConfigError(f"{key} must be {'<' if open_high else '<='} {high}, got {value!r}")


def check_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")


def check_choice(key: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


@dataclass
class OptimConfig:
    """SGD for the shared weights (search) or the child (final training)."""

    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 0.0  # PyTorch convention: the authors' l2 loss `lam * sum(w^2)` is weight_decay = 2 * lam
    grad_clip: float | None = None  # global-norm clipping; None = off
    schedule: str = "cosine"  # "cosine" (SGDR), "decay" (exponential from decay_start), "constant"
    lr_min: float = 0.0005  # cosine: l_min
    t0: int = 10  # cosine: first cycle length in epochs
    t_mul: int = 2  # cosine: cycle length multiplier
    decay: float = 1.0  # decay: lr *= decay every epoch from decay_start
    decay_start: int = 0  # decay: first epoch (0-based) whose lr is decayed
    decay_min: float = 0.0  # decay: floor

    def validate(self, prefix: str = "optim") -> None:
        check_number(f"{prefix}.lr", self.lr, 0.0, open_low=True)
        check_number(f"{prefix}.momentum", self.momentum, 0.0, 1.0, open_high=True)
        check_number(f"{prefix}.weight_decay", self.weight_decay, 0.0)
        if self.grad_clip is not None:  # None (null) is "off"; a non-positive bound is a mistake, not a way to say off
            check_number(f"{prefix}.grad_clip", self.grad_clip, 0.0, open_low=True)
        check_choice(f"{prefix}.schedule", self.schedule, SCHEDULES)
        check_number(f"{prefix}.lr_min", self.lr_min, 0.0)
        if self.schedule == "cosine" and self.lr_min > self.lr:
            raise ConfigError(f"{prefix}.lr_min ({self.lr_min}) must not exceed {prefix}.lr ({self.lr})")
        check_int(f"{prefix}.t0", self.t0, 1)
        check_int(f"{prefix}.t_mul", self.t_mul, 1)
        check_number(f"{prefix}.decay", self.decay, 0.0, 1.0, open_low=True)
        check_int(f"{prefix}.decay_start", self.decay_start, 0)
        check_number(f"{prefix}.decay_min", self.decay_min, 0.0)


@dataclass
class SearchConfig:
    epochs: int = 150
    shared_steps: int | None = None  # shared-weight steps per epoch; None = one pass over the training split
    controller_every: int = 1  # train the controller every N epochs
    eval_every: int = 1  # evaluate on the validation split (fresh arch per batch) every N epochs; 0 = never
    log_archs: int = 10  # sampled archs (with their minibatch reward) logged after each epoch
    derive_samples: int = 100  # archs sampled at the end and scored on the whole validation split
    derive_greedy: bool = False  # also score the controller's argmax arch
    # also score this many uniformly sampled archs the same way (a fixed draw per seed, the same under every
    # policy): the in-run reference that tells whether the derived arch beats random archs on the same supernet
    derive_uniform: int = 0
    optim: OptimConfig = field(default_factory=OptimConfig)
    reward_mode: str = "eval"  # module mode while computing rewards: "eval" or "train" (BN batch statistics)
    # which policy samples the archs: "enas" (the LSTM controller trained with REINFORCE) or "random" (uniform
    # archs from `UniformSampler`, no controller phase: random search with weight sharing)
    policy: typing.Literal["enas", "random"] = "enas"
    # how archs are scored with the shared weights (enas.search.scoring): "metric" (the paper: accuracy, or reward_c /
    # ppl)
    # or "loss" (the mean cross-entropy), for the reward and the derive ranking alike
    score: typing.Literal["metric", "loss"] = "metric"
    score_batches: int = 1  # validation minibatches one reward averages over (the paper: 1)
    # the first N epochs train the shared weights under uniformly sampled archs, without a controller phase
    warmup_epochs: int = 0
    dedup: bool = False  # derive (and `enas rank`) count archs that are the same network once (Arch.canonical)

    def validate(self) -> None:
        self.optim.validate("search.optim")
        check_int("search.epochs", self.epochs, 1)
        if self.shared_steps is not None:
            check_int("search.shared_steps", self.shared_steps, 1)
        for key in ("controller_every", "eval_every", "log_archs", "derive_uniform"):
            check_int(f"search.{key}", getattr(self, key), 0)
        check_int("search.derive_samples", self.derive_samples, 1)
        check_choice("search.reward_mode", self.reward_mode, REWARD_MODES)
        check_choice("search.score", self.score, SCORES)
        check_choice("search.policy", self.policy, ("enas", "random"))
        check_int("search.score_batches", self.score_batches, 1)
        check_int("search.warmup_epochs", self.warmup_epochs, 0)
        check_bool("search.dedup", self.dedup)


@dataclass
class TrainConfig:
    epochs: int = 310
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval_every: int = 1  # validation (when the task has a validation split) every N epochs; 0 = never
    averaging: bool = False  # language models: average the weights once the validation perplexity stalls
    averaging_patience: int = 10  # average once valid loss > best of all validations but the last N
    checkpoint_every: int = 1
    compile: bool = False  # torch.compile the child (the space's compile_child); pays off on a GPU, see benchmarks

    def validate(self) -> None:
        self.optim.validate("train.optim")
        check_int("train.epochs", self.epochs, 1)
        check_int("train.eval_every", self.eval_every, 0)
        check_int("train.averaging_patience", self.averaging_patience, 0)
        check_int("train.checkpoint_every", self.checkpoint_every, 0)
        for key in ("averaging", "compile"):
            check_bool(f"train.{key}", getattr(self, key))


@dataclass
class Config:
    space: str = "rnn"
    space_source: str = ""  # where a space that is not built in was loaded from (package.module:NAME; enas.registry)
    dataset: str = "ptb"
    preset: str = "paper"
    seed: int = 0
    device: str = "auto"
    # auto: bf16 autocast for convolutional networks on a GPU, float32 elsewhere; fp32; bf16 (enas.build.autocast)
    precision: str = "auto"
    model: Section | None = None  # the space's model config (RnnSpaceConfig, ...): built by its presets
    task: Section | None = None  # the space's task config (TextTaskConfig, ImageTaskConfig, TabularTaskConfig)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    kernels: KernelsConfig = field(default_factory=KernelsConfig)  # CPU fast paths (enas.kernels)
    resume_new_data: bool = False  # let --resume continue on data whose fingerprint differs from the run's

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    def entry(self) -> Any:
        """The run's `enas.registry.SpaceEntry`, looked up once (from `space` and `space_source`) and kept."""
        cached = self.__dict__.get("_entry")
        if cached is None or (cached.name, cached.source) != (self.space, self.space_source or cached.source):
            cached = self.__dict__["_entry"] = registry.get(self.space, self.space_source)
        return cached


def to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # vars(), not fields(): a dataclass unpickled from an older version keeps the attributes it was saved with
        return {k: to_plain(v) for k, v in vars(obj).items() if not k.startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    return obj


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value for every leaf of a config dataclass."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value
    return out


def _field_type(obj: Any, name: str) -> Any:
    hints = typing.get_type_hints(type(obj))
    return hints.get(name, Any)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``, converting where it is lossless (int -> float, list -> tuple)."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list like [1, 2], got {value!r}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        inner = args[0] if args else Any
        items = [_coerce(v, inner, key) for v in value]
        return tuple(items) if origin is tuple else items
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            return str(value)
        return value
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def set_key(cfg: Any, key: str, value: Any) -> None:
    """Set a dotted key, checking that it exists and that the value has the right type."""
    parts = key.split(".")
    obj = cfg
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(obj) or part not in {f.name for f in dataclasses.fields(obj)}:
            known = list(flatten(cfg).keys())
            close = difflib.get_close_matches(key, known, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "; see --print-config for the keys"
            raise ConfigError(f"unknown config key {key!r}{hint}")
        if i == len(parts) - 1:
            current = getattr(obj, part)
            if dataclasses.is_dataclass(current) and not isinstance(current, type):
                if not isinstance(value, dict):
                    first = dataclasses.fields(current)[0].name
                    raise ConfigError(f"{key} is a section; set its keys, e.g. {key}.{first}=...")
                apply_dict(current, value, prefix=key + ".")
            else:
                setattr(obj, part, _coerce(value, _field_type(obj, part), key))
        else:
            obj = getattr(obj, part)


def apply_dict(cfg: Any, values: dict[str, Any], prefix: str = "") -> None:
    """Apply a nested dict (as read from YAML) onto a config dataclass."""
    for k, v in values.items():
        target = getattr(cfg, k, None) if dataclasses.is_dataclass(cfg) else None
        if isinstance(v, dict) and dataclasses.is_dataclass(target):
            apply_dict(target, v, prefix=f"{prefix}{k}.")
        elif dataclasses.is_dataclass(target) and not isinstance(target, type):
            raise ConfigError(f"{prefix}{k} is a section of keys, not a value (got {v!r}); see --print-config")
        else:
            # set_key on the root would need the full path; descend here instead
            if not dataclasses.is_dataclass(cfg) or k not in {f.name for f in dataclasses.fields(cfg)}:
                raise ConfigError(f"unknown config key {prefix}{k!r}; see --print-config for the keys")
            setattr(cfg, k, _coerce(v, _field_type(cfg, k), prefix + k))


# Config keys renamed since the first release: old dotted key -> new dotted key. Configs read back from older
# checkpoints, model files and seed templates go through `migrate_dict`, so a rename never breaks a resume.
RENAMED: dict[str, str] = {}


def migrate_dict(values: dict[str, Any], template: Any) -> tuple[dict[str, Any], list[str]]:
    """Map a stored nested config dict onto the keys of ``template`` (a Config of this version).

    Renamed keys (`RENAMED`) move to their new names; keys this version no longer has are dropped and returned, so
    the caller can say so. Returns (dict ready for `apply_dict`, dropped dotted keys).
    """
    known = flatten(template)
    flat = dict(flatten_dict(values))
    for old, new in RENAMED.items():
        if old in flat and new not in flat:
            flat[new] = flat.pop(old)
    if flat.get("model.cell") in OLD_CELL_NAMES:
        flat["model.cell"] = OLD_CELL_NAMES[flat["model.cell"]]
    dropped = sorted(k for k in flat if k not in known)
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if key in known:
            node = nested
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return nested, dropped


# Keys a resumed run may change (they are applied); every other key is fixed by the run's checkpoint, since the
# weights, the optimiser state, the data split or the random streams depend on it. A key ending in "." is a section.
RESUMABLE = (
    "device", "precision", "search.epochs", "search.shared_steps", "search.controller_every", "search.eval_every",
    "search.log_archs", "search.derive_samples", "search.derive_greedy", "search.derive_uniform", "search.optim.",
    "train.epochs", "train.eval_every", "train.checkpoint_every", "train.optim.", "train.compile",
    "controller.lr", "controller.entropy_weight", "controller.train_steps", "model.cell", "model.compile_cell",
    "kernels.", "resume_new_data",
)


def resumable(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in RESUMABLE)


def apply_resume_overrides(cfg: Any, overrides: list[tuple[str, Any]]) -> list[str]:
    """Apply ``(dotted key, value)`` pairs to the config of a resumed run. A value equal to the run's is ignored;
    a change of a key outside `RESUMABLE` raises `ConfigError` naming it. Returns the keys that changed."""
    changed: list[str] = []
    for key, value in overrides:
        probe = copy.deepcopy(cfg)
        set_key(probe, key, value)  # checks the key and the value's type
        before, after = flatten(cfg), flatten(probe)
        diff = [k for k in after if after[k] != before.get(k)]
        fixed = [k for k in diff if not resumable(k)]
        if fixed:
            k = fixed[0]
            raise ConfigError(f"{k} cannot change when resuming (the run has {before.get(k)!r}, asked {after[k]!r}); "
                              "drop it, or start a new run with another --out")
        if diff:
            set_key(cfg, key, value)
            changed += diff
    return changed


def flatten_dict(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A nested dict (as read from YAML) -> (dotted key, leaf value) pairs."""
    out: list[tuple[str, Any]] = []
    for k, v in values.items():
        if isinstance(v, dict):
            out += flatten_dict(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def parse_set(items: list[str]) -> list[tuple[str, Any]]:
    """``["a.b=3", "c=[1, 2]"]`` -> ``[("a.b", 3), ("c", [1, 2])]``; values are parsed as YAML scalars/lists."""
    out = []
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, str):
            if value.lower() in ("none", "null", "~"):
                value = None
            else:
                try:  # YAML 1.1 reads "1e-3" as a string
                    value = float(value)
                except ValueError:
                    pass
        out.append((key.strip(), value))
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text; save the config file as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys")
    return data


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
