"""enas: Efficient Neural Architecture Search via Parameter Sharing (Pham et al., ICML 2018) in PyTorch.

The public API::

    from enas import make_config, Search, FinalTraining, load_arch, parse_fixed_arc, draw_arch

    cfg = make_config("micro", "demo", "search", "fashion-mnist")   # preset for a command, space and dataset
    summary = Search(cfg, "runs/micro").run()                       # search, derive; writes the run directory
    arch = load_arch("runs/micro/arch.json")
    FinalTraining(make_config("micro", "demo", "train", "fashion-mnist"), arch, "runs/final").run()
"""

import importlib
from typing import Any

# Names are imported on first use, so that `enas --help` and `import enas.arch` stay fast.
_EXPORTS = {
    "Arch": "enas.arch", "load_arch": "enas.arch", "parse_fixed_arc": "enas.arch", "save_arch": "enas.arch",
    "Controller": "enas.search.controller", "ControllerConfig": "enas.search.controller",
    "UniformSampler": "enas.search.controller",
    "ArchError": "enas.errors", "ConfigError": "enas.errors", "DataError": "enas.errors",
    "TrainingDiverged": "enas.errors", "UserError": "enas.errors",
    "make_config": "enas.presets", "ReinforceTrainer": "enas.search.reinforce", "Search": "enas.search.loop",
    "FinalTraining": "enas.train.final", "evaluate_model": "enas.train.final", "draw_arch": "enas.viz.arch",
    "plot_curves": "enas.viz.arch",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'enas' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "Arch",
    "ArchError",
    "ConfigError",
    "Controller",
    "ControllerConfig",
    "DataError",
    "FinalTraining",
    "ReinforceTrainer",
    "Search",
    "TrainingDiverged",
    "UniformSampler",
    "UserError",
    "draw_arch",
    "evaluate_model",
    "load_arch",
    "make_config",
    "parse_fixed_arc",
    "plot_curves",
    "save_arch",
    "__version__",
]
