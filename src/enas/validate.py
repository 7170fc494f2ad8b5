"""One place that checks a whole config once the preset, a YAML file, every ``--set`` and (on resume) the allowed
changes are merged: types, ranges, finiteness and choices, each failure a `ConfigError` that names the key.

Every section checks its own values with a ``validate()`` method (search, train and their optimisers, the
controller, the space's model config, the task config), run from here, so that a value set after a config object
was built is checked as well; this module adds what spans sections or has no section (seed, precision, sections
replaced by scalars, non-finite numbers anywhere).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from enas.config import PRECISIONS, Config, check_choice, check_int, check_number, flatten
from enas.errors import ConfigError

SEED_MAX = 2**32 - 1


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
    check_int("seed", cfg.seed, 0)
    if cfg.seed > SEED_MAX:
        raise ConfigError(f"seed must lie in 0..{SEED_MAX}, got {cfg.seed}")
    check_choice("precision", cfg.precision, PRECISIONS)
    for key in ("lr", "entropy_weight", "skip_weight"):
        check_number(f"controller.{key}", getattr(cfg.controller, key), 0.0)
    for section in (cfg.search, cfg.train, cfg.controller, cfg.model, cfg.task):  # each checks its own values
        check = getattr(section, "validate", None)  # a user space's model config may have none
        if check is not None:
            check()
    return cfg
