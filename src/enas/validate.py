"""One place that checks a whole config once the preset, a YAML file, every ``--set`` and (on resume) the allowed
changes are merged: types, ranges, finiteness and choices, each failure a `ConfigError` that names the key.

Every section with its own rules (the controller, the space's model config, the task config) has a ``validate()``
method, run from here too, so that a value set after a config object was built is checked as well.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from enas.config import Config, OptimConfig, flatten
from enas.errors import ConfigError

SEED_MAX = 2**32 - 1
SCHEDULES = ("cosine", "decay", "constant")
REWARD_MODES = ("eval", "train")
SCORES = ("metric", "loss")  # search.score (enas.search.scoring)
PRECISIONS = ("auto", "fp32", "bf16")


def _int(key: str, value: Any, low: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{key} must be an integer >= {low}, got {value!r}")


def _number(key: str, value: Any, low: float | None = None, high: float | None = None, open_low: bool = False,
            open_high: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value!r}")
    if low is not None and (value <= low if open_low else value < low):
        raise ConfigError(f"{key} must be {'>' if open_low else '>='} {low}, got {value!r}")
    if high is not None and (value >= high if open_high else value > high):
        raise ConfigError(f"{key} must be {'<' if open_high else '<='} {high}, got {value!r}")


def _optim(prefix: str, o: OptimConfig) -> None:
    _number(f"{prefix}.lr", o.lr, 0.0, open_low=True)
    _number(f"{prefix}.momentum", o.momentum, 0.0, 1.0, open_high=True)
    _number(f"{prefix}.weight_decay", o.weight_decay, 0.0)
    if o.grad_clip is not None:  # None (null) is "off"; a non-positive bound is a mistake, not a way to say off
        _number(f"{prefix}.grad_clip", o.grad_clip, 0.0, open_low=True)
    if o.schedule not in SCHEDULES:
        raise ConfigError(f"{prefix}.schedule must be one of {', '.join(SCHEDULES)}, got {o.schedule!r}")
    _number(f"{prefix}.lr_min", o.lr_min, 0.0)
    if o.schedule == "cosine" and o.lr_min > o.lr:
        raise ConfigError(f"{prefix}.lr_min ({o.lr_min}) must not exceed {prefix}.lr ({o.lr})")
    _int(f"{prefix}.t0", o.t0, 1)
    _int(f"{prefix}.t_mul", o.t_mul, 1)
    _number(f"{prefix}.decay", o.decay, 0.0, 1.0, open_low=True)
    _int(f"{prefix}.decay_start", o.decay_start, 0)
    _number(f"{prefix}.decay_min", o.decay_min, 0.0)


def _sections(cfg: Any, prefix: str = "") -> None:
    """A section replaced by a scalar (``search: 5`` in YAML) is caught here, before anything reads it."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore
        if dataclasses.is_dataclass(default) and not dataclasses.is_dataclass(value):
            raise ConfigError(f"{prefix}{f.name} is a section of keys, not a value (got {value!r}); see "
                              "--print-config")
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _sections(value, f"{prefix}{f.name}.")


def validate_config(cfg: Config) -> Config:
    """Check every value of ``cfg``; return it unchanged or raise `ConfigError` naming the first bad key."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"expected a Config, got {type(cfg).__name__}")
    _sections(cfg)
    if cfg.model is None or cfg.task is None or not dataclasses.is_dataclass(cfg.model) \
            or not dataclasses.is_dataclass(cfg.task):
        raise ConfigError("model and task must be sections of keys; start from a preset (--preset)")
    for key, value in flatten(cfg).items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
    _int("seed", cfg.seed, 0)
    if cfg.seed > SEED_MAX:
        raise ConfigError(f"seed must lie in 0..{SEED_MAX}, got {cfg.seed}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    s, t = cfg.search, cfg.train
    _optim("search.optim", s.optim)
    _optim("train.optim", t.optim)
    _int("search.epochs", s.epochs, 1)
    if s.shared_steps is not None:
        _int("search.shared_steps", s.shared_steps, 1)
    for key in ("controller_every", "eval_every", "log_archs", "derive_uniform"):
        _int(f"search.{key}", getattr(s, key), 0)
    _int("search.derive_samples", s.derive_samples, 1)
    if s.reward_mode not in REWARD_MODES:
        raise ConfigError(f"search.reward_mode must be one of {', '.join(REWARD_MODES)}, got {s.reward_mode!r}")
    if s.score not in SCORES:
        raise ConfigError(f"search.score must be one of {', '.join(SCORES)}, got {s.score!r}")
    _int("search.score_batches", s.score_batches, 1)
    _int("search.warmup_epochs", s.warmup_epochs, 0)
    if not isinstance(s.dedup, bool):
        raise ConfigError(f"search.dedup must be true or false, got {s.dedup!r}")
    _int("train.epochs", t.epochs, 1)
    _int("train.eval_every", t.eval_every, 0)
    _int("train.averaging_patience", t.averaging_patience, 0)
    _int("train.checkpoint_every", t.checkpoint_every, 0)
    for key in ("averaging", "compile"):
        if not isinstance(getattr(t, key), bool):
            raise ConfigError(f"train.{key} must be true or false, got {getattr(t, key)!r}")
    c = cfg.controller
    for key in ("lr", "entropy_weight", "skip_weight"):
        _number(f"controller.{key}", getattr(c, key), 0.0)
    for section in (cfg.controller, cfg.model, cfg.task):  # each section checks its own values the same way
        check = getattr(section, "validate", None)  # a user space's model config may have none
        if check is not None:
            check()
    return cfg
