"""The space registry: every search space is one `SpaceEntry`, and everything that used to list spaces by name
(the CLI's ``--space``, the presets, `enas.build`, arch files, the pictures, the out-of-memory message) reads it.

An entry names its parts by reference (``"module:attribute"`` strings, imported on first use, so reading the
registry never imports torch) or by the objects themselves:

* ``space``: the `enas.spaces.base.Space` subclass, constructed with the entry's model config;
* ``arch``: its `enas.arch.Arch` subclass (what arch files decode to);
* ``presets``: ``presets(preset, command) -> Config`` with the ``model``, ``task``, ``controller``, ``search`` and
  ``train`` sections filled for ``preset`` in ``"paper" | "quick" | "demo"`` and ``command`` in
  ``"search" | "train"``;
* ``task``: the kind of data, ``"text"`` (language modelling, PTB-format corpora), ``"images"`` (classification:
  CIFAR-10, Fashion-MNIST or a ``.npz``) or ``"tabular"`` (classification of feature rows from a ``.npz``; no
  default data set);
* optional: ``fit_config(model_cfg, arch)`` sets the sizes an arch decides (number of nodes or layers) before a
  child is built; ``draw(arch_json, title) -> matplotlib Figure`` draws it (spaces without one get a text picture);
  ``size_keys``: the model settings that decide memory, named when a model does not fit.

Three ways to add a space, none of which touches this package (docs/spaces.md):

1. ``register(SpaceEntry(...))`` in your own code before calling `enas.search.loop.Search`;
2. ``enas search --space package.module:NAME`` (``NAME`` a `SpaceEntry` or a function returning one); the run's
   config and its arch files remember ``package.module:NAME`` as the entry's ``source``, so later commands load it
   again by themselves;
3. an installed package that declares the entry point group ``enas.spaces`` (``name = "package.module:NAME"``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from enas.errors import ConfigError, UserError
from enas.tasks import datasets

ENTRY_POINT_GROUP = "enas.spaces"
TASKS = ("text", "images", "tabular")


@dataclass(frozen=True)
class SpaceEntry:
    name: str
    task: Literal["text", "images", "tabular"]
    space: str | type
    arch: str | type
    presets: str | Callable[[str, str], Any]
    fit_config: str | Callable[[Any, Any], None] | None = None
    draw: str | Callable[[dict[str, Any], str | None], Any] | None = None
    size_keys: tuple[str, ...] = ()
    description: str = ""
    source: str = ""  # "module:NAME" it was loaded from (empty for built-in and directly registered spaces)

    def load(self, part: str) -> Any:
        """The object behind a reference field (``"space"``, ``"arch"``, ``"presets"``, ``"fit_config"``, ...)."""
        return _resolve(getattr(self, part), f"space {self.name!r}: {part}")

    def build(self, model_cfg: Any) -> Any:
        """The `Space` for a model config."""
        return self.load("space")(model_cfg)

    @property
    def arch_class(self) -> type:
        return self.load("arch")

    @property
    def default_dataset(self) -> str:
        """The data a command uses without --data; "" for tabular spaces, which have none."""
        return datasets.default_for(self.task)


_BUILTIN = tuple(
    SpaceEntry(name, task, f"enas.spaces.{name}.space:{cls}Space", f"enas.spaces.{name}.arch:{cls}Arch",
               f"enas.spaces.{name}.presets:presets", fit_config=f"enas.spaces.{name}.space:fit_config",
               draw=f"enas.spaces.{name}.draw:draw", size_keys=size_keys, description=description)
    for name, cls, task, size_keys, description in (
        ("rnn", "Rnn", "text", ("hidden", "num_nodes"), "recurrent cell for language modelling (paper section 2.1)"),
        ("macro", "Macro", "images", ("channels", "num_layers"), "whole convolutional network (paper section 2.2)"),
        ("micro", "Micro", "images", ("channels", "num_layers", "num_nodes"),
         "convolutional cells (paper section 2.3)"),
    )
)
_ENTRIES: dict[str, SpaceEntry] = {e.name: e for e in _BUILTIN}
_entry_points_loaded = False


def register(entry: SpaceEntry, replace: bool = False) -> SpaceEntry:
    """Add a space. ``replace=False`` refuses a name that is already taken by another entry."""
    if not isinstance(entry, SpaceEntry):
        raise ConfigError(f"a space must be registered as an enas.registry.SpaceEntry, got {type(entry).__name__}")
    if entry.task not in TASKS:
        raise ConfigError(f"space {entry.name!r}: task must be one of {', '.join(TASKS)}, got {entry.task!r}")
    if not entry.name or ":" in entry.name:
        raise ConfigError(f"a space name must be non-empty and without ':', got {entry.name!r}")
    old = _ENTRIES.get(entry.name)
    if old is not None and old != entry and not replace:
        if old.source and old.source == entry.source:
            return old
        raise ConfigError(f"space {entry.name!r} is already registered; pick another name")
    _ENTRIES[entry.name] = entry
    return entry


# Whether a space reference read from a file (an arch file's or a run's ``space_source``) may be imported. The
# library trusts them (its caller chose the files); the `enas` command imports only the references its user names.
_trust: dict[str, Any] = {"required": False, "sources": set()}


@contextlib.contextmanager
def trusting_only(sources: list[str] | tuple[str, ...] = ()) -> Iterator[None]:
    """Inside the block, import a space reference found in a file only when it is one of ``sources`` (the `enas`
    command's ``--trust-space``), or was named by the user (``--space``), or is an installed plugin's."""
    saved = dict(_trust)
    _trust.update(required=True, sources={_normalized(s) for s in sources})
    try:
        yield
    finally:
        _trust.clear()
        _trust.update(saved)


def _normalized(ref: str) -> str:
    module_name, _, attr = ref.rpartition(":")
    return f"{Path(module_name).resolve()}:{attr}" if module_name.endswith(".py") else ref


def get(name: str, source: str = "") -> SpaceEntry:
    """The entry of a space name, a ``module:NAME`` reference, or a name whose ``source`` says where it lives."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"a space is a name or module:NAME, got {name!r}")
    if ":" in name:
        return load_reference(name)
    if name in _ENTRIES:
        return _ENTRIES[name]
    _load_entry_points()
    if name in _ENTRIES:
        return _ENTRIES[name]
    if source:
        if _trust["required"] and _normalized(source) not in _trust["sources"]:
            raise UserError(f"the space {name!r} is code that a file names ({source}); enas imports it only when "
                            f"asked: add --trust-space {source} if you trust it")
        entry = load_reference(source)
        if entry.name == name:
            return entry
    raise ConfigError(f"unknown space {name!r}; choose {', '.join(names())}, or pass --space package.module:NAME "
                      f"naming a SpaceEntry (docs/spaces.md)")


def names() -> list[str]:
    """The registered space names (built-in first), entry points included."""
    _load_entry_points()
    return list(_ENTRIES)


def load_reference(ref: str) -> SpaceEntry:
    """Import ``package.module:NAME`` (or ``path/to/file.py:NAME``) and register the SpaceEntry it names."""
    module_name, _, attr = ref.rpartition(":")
    if module_name.endswith(".py"):  # remembered as an absolute path, so later commands find it from anywhere
        ref = f"{Path(module_name).resolve()}:{attr}"
    obj = _resolve(ref, "--space")
    if callable(obj) and not isinstance(obj, SpaceEntry):
        obj = obj()
    if not isinstance(obj, SpaceEntry):
        raise ConfigError(f"{ref} is a {type(obj).__name__}, not an enas.registry.SpaceEntry (docs/spaces.md)")
    return register(dataclasses.replace(obj, source=ref))


def text_space(name: str) -> bool:
    """True when the space models text (language models), False for classifiers (images, tabular)."""
    return get(name).task == "text"


def _resolve(ref: Any, what: str) -> Any:
    if not isinstance(ref, str):
        return ref
    module_name, sep, attr = ref.rpartition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what}: {ref!r} is not a reference of the form package.module:NAME")
    try:
        if module_name.endswith(".py"):
            module = _import_file(Path(module_name))
        else:
            if os.getcwd() not in sys.path:  # `enas --space mymodule:NAME` run from the folder that holds it
                sys.path.append(os.getcwd())
            module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"{what}: cannot import {module_name} ({e}); check the name and that it is on the path "
                          f"(PYTHONPATH) or installed") from None
    except SyntaxError as e:
        raise ConfigError(f"{what}: {e.filename or module_name} line {e.lineno}: {e.msg}; fix the file") from None
    except Exception as e:  # the user's module raised while it was imported
        raise ConfigError(f"{what}: importing {module_name} raised {type(e).__name__}: {e}; fix the file") from None
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise ConfigError(f"{what}: {module_name} has no attribute {attr!r}") from None
    return obj


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ImportError(f"{path} does not exist")
    name = f"enas_user_space_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _ENTRIES:
            continue
        try:
            obj = ep.load()
            if callable(obj) and not isinstance(obj, SpaceEntry):
                obj = obj()
            register(dataclasses.replace(obj, source=ep.value))
        except Exception as e:  # a broken plugin must not break the built-in spaces
            print(f"warning: the space {ep.name!r} of entry point group {ENTRY_POINT_GROUP} cannot be loaded "
                  f"({type(e).__name__}: {e})", file=sys.stderr)
