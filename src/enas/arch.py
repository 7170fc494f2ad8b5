"""Architectures as plain data: the base class, the registry of per-space classes, and JSON files.

An architecture file is one JSON object::

    {"format": "enas-arch", "version": 1, "space": "micro", ...space-specific body...}

Each search space defines its own `Arch` subclass (in `enas.arch.<space>`) with named ops and input indices, its
validation, and the codec for the authors' integer notation (`fixed_arc` strings of the official scripts).
This package imports neither torch nor any module of the supernets.
"""

from __future__ import annotations

import json
import os
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from enas import registry
from enas.errors import ArchError, ConfigError

ARCH_FORMAT = "enas-arch"
ARCH_VERSION = 1
# Arch files and integer notations beyond these are not architectures a model could be built from: refused
# before parsing (the paper's largest arch file is about 10 kB).
MAX_ARCH_FILE_BYTES = 1 << 20
MAX_FIXED_ARC_CHARS = 100_000

_REGISTRY: dict[str, type[Arch]] = {}


class Arch(ABC):
    """One architecture of one space. Subclasses are frozen dataclasses; equality is structural."""

    space: ClassVar[str]

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """The space-specific body of the JSON object (without format/version/space)."""

    @classmethod
    @abstractmethod
    def from_dict(cls, body: dict[str, Any]) -> Arch:
        """Parse and validate a body; raise `ArchError` with a precise message on any problem."""

    @abstractmethod
    def to_fixed_arc(self) -> str:
        """The authors' integer notation, space-separated."""

    @classmethod
    @abstractmethod
    def from_fixed_arc(cls, text: str) -> Arch:
        """Parse the authors' integer notation; raise `ArchError` when malformed."""

    @abstractmethod
    def describe(self) -> str:
        """A short multi-line human-readable summary."""

    def canonical(self) -> Any:
        """A hashable key equal for archs that are the same network when trained on their own (isomorphic cells,
        the operands of a commutative add in either order): derive and `enas rank` count such archs once when
        ``search.dedup`` is on. This default, the integer notation, merges nothing; spaces override it."""
        return self.to_fixed_arc()

    def to_json(self) -> dict[str, Any]:
        head = {"format": ARCH_FORMAT, "version": ARCH_VERSION, "space": self.space}
        source = registry.get(self.space).source if self.space in registry.names() else ""
        if source:  # a space that is not built in: where to load it from (`enas.registry`)
            head["space_source"] = source
        return {**head, **self.to_dict()}


def register_arch(cls: type[Arch]) -> type[Arch]:
    """Class decorator: make `cls` the Arch type of the space `cls.space`."""
    _REGISTRY[cls.space] = cls
    return cls


def arch_class(space: str, source: str = "") -> type[Arch]:
    """The Arch subclass of ``space``, from the space registry (`enas.registry`; no torch is imported)."""

    try:
        cls = registry.get(space, source).arch_class
    except ConfigError as e:
        raise ArchError(str(e)) from None
    if not (isinstance(cls, type) and issubclass(cls, Arch)):
        raise ArchError(f"space {space!r}: its arch must be a subclass of enas.arch.Arch, got {cls!r}")
    return cls


def arch_from_json(obj: Any) -> Arch:
    """Build an Arch from a parsed JSON object, checking format, version and space."""
    if not isinstance(obj, dict):
        raise ArchError("an architecture must be a JSON object with 'space' and the space's fields")
    fmt = obj.get("format", ARCH_FORMAT)
    if fmt != ARCH_FORMAT:
        raise ArchError(f"not an architecture file: format is {fmt!r}, expected {ARCH_FORMAT!r}")
    version = obj.get("version", ARCH_VERSION)
    if version != ARCH_VERSION:
        raise ArchError(f"architecture file version {version!r} is not supported (this enas reads {ARCH_VERSION})")
    if "space" not in obj:
        raise ArchError("architecture has no 'space' field; add \"space\": \"rnn\" | \"macro\" | \"micro\"")
    if not isinstance(obj["space"], str) or not isinstance(obj.get("space_source", ""), str):
        raise ArchError("'space' (and 'space_source') of an architecture must be strings")
    body = {k: v for k, v in obj.items() if k not in ("format", "version", "space", "space_source")}
    return arch_class(obj["space"], obj.get("space_source", "")).from_dict(body)


def load_arch(path: str | os.PathLike) -> Arch:
    """Read an architecture JSON file; `ArchError` on a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ArchError(f"architecture file {path} does not exist")
    if path.stat().st_size > MAX_ARCH_FILE_BYTES:
        raise ArchError(f"{path} is {path.stat().st_size:,} bytes; an architecture file is at most "
                        f"{MAX_ARCH_FILE_BYTES:,} (the paper's largest is about 10 kB)")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArchError(f"{path} is not valid JSON ({e}); write it as `enas derive` or `enas show --json` does") from e
    except (RecursionError, ValueError) as e:  # nesting deeper than the parser's stack, integers of 4300+ digits
        raise ArchError(f"{path} is not an architecture file ({type(e).__name__}: nested too deeply or a number too "
                        "long)") from None
    try:
        return arch_from_json(obj)
    except ArchError as e:
        raise ArchError(f"{path}: {e}") from e


def save_arch(arch: Arch, path: str | os.PathLike) -> None:
    """Write an architecture file atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(arch.to_json(), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def parse_fixed_arc(text: str, space: str) -> Arch:
    """Parse the authors' integer notation for `space`."""
    if len(text) > MAX_FIXED_ARC_CHARS:
        raise ArchError(f"the integer notation is {len(text):,} characters; at most {MAX_FIXED_ARC_CHARS:,} are read")
    return arch_class(space).from_fixed_arc(text)


def parse_ints(text: str, what: str = "architecture") -> list[int]:
    """Split a whitespace/comma separated string of non-negative integers (helper for the codecs)."""
    tokens = text.replace(",", " ").split()
    try:
        values = [int(t) for t in tokens]
    except ValueError as e:
        raise ArchError(f"{what} must be integers separated by spaces: {e}") from e
    if any(v < 0 for v in values):
        raise ArchError(f"{what} contains a negative integer")
    return values


__all__ = [
    "ARCH_FORMAT",
    "ARCH_VERSION",
    "Arch",
    "arch_class",
    "arch_from_json",
    "load_arch",
    "parse_fixed_arc",
    "parse_ints",
    "register_arch",
    "save_arch",
]
