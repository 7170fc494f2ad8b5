"""The run directory: resolved config, metrics log, atomic checkpoints, RNG states, summary.

Layout (every command that trains writes one)::

    RUN/config.yaml          resolved configuration
    RUN/metrics.jsonl        one JSON object per line ({"kind": "epoch" | "step" | "arch" | ..., ...})
    RUN/checkpoints/last.pt  latest complete checkpoint (written to a temp file, then renamed over the old one)
    RUN/summary.json         final figures, versions, seed, git commit, wall time split
    RUN/events.*             TensorBoard events when the `tensorboard` package is installed
    RUN/.lock                held (flock) by the process that writes the run; the kernel releases it when that
                             process ends, however it ends, so a lock left by a crash is never in the way
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import pickle
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from enas.errors import UserError
from enas.runs import distributed as dist

CHECKPOINT = "last.pt"


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it back at once
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temp file next to ``path``, fsync, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the user's group
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean(value: Any) -> Any:
    # JSON has no NaN/inf; write them as null so every line stays parseable.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


LOCK = ".lock"
_OPENED: list[Path] = []  # run directories opened by this process, latest last (for the interrupt message)
_COMMAND_OF: dict[Path, str] = {}  # run directory -> the command that opened it ("search", "train")


class UnsafeFileError(UserError):
    """A checkpoint or model file that holds more than tensors and plain values: loading it could run code."""


def _numpy_array_globals() -> list[Any]:
    """What unpickling a numpy array needs (the RNG state in a checkpoint): data, no code."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_tensors(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` that never runs code from the file: tensors, numpy arrays and plain Python values only
    (``weights_only=True``). A file holding anything else raises `UnsafeFileError` naming what it holds; a file that
    cannot be read raises the library's own error."""
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "unsupported global" not in text.lower():  # not a forbidden object: a damaged file, said by the caller
            raise
        found = re.search(r"GLOBAL ([\w.]+)", text, re.IGNORECASE)
        what = found.group(1) if found else "a Python object"
        raise UnsafeFileError(f"{path} holds {what}, not only tensors and plain values; enas does not load files that "
                              "could run code: use files written by this version of enas") from None


CHECKSUM_KEY = "sha256"  # a checkpoint's digest of the rest of its content


def content_digest(obj: Any) -> str:
    """SHA-256 of a checkpoint's content: every tensor's dtype, shape and bytes and every plain value, walked in a
    fixed order. Independent of how the file encodes it, so it detects bits changed in the content itself."""
    h = hashlib.sha256()

    def walk(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous().reshape(-1)
            h.update(f"T{t.dtype}{tuple(x.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(x, np.ndarray):
            h.update(f"A{x.dtype}{x.shape}".encode())
            h.update(np.ascontiguousarray(x).tobytes())
        elif isinstance(x, dict):
            h.update(b"{")
            for k in sorted(x, key=repr):
                h.update(repr(k).encode())
                walk(x[k])
            h.update(b"}")
        elif isinstance(x, (list, tuple)):
            h.update(b"[" if isinstance(x, list) else b"(")
            for v in x:
                walk(v)
            h.update(b"]")
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    walk(obj)
    return h.hexdigest()


def last_opened() -> Path | None:
    """The run directory this process opened last, if any."""
    return _OPENED[-1] if _OPENED else None


def resume_command(run: Path) -> str:
    """The command that continues ``run``: ``enas search --resume --out RUN`` (the command this process opened it
    for), under torchrun with the same launcher options."""
    command = " ".join(w for w in ("enas", _COMMAND_OF.get(run, ""), "--resume", "--out", str(run)) if w)
    try:  # a user's space is imported on resume only when named again (enas.registry.trusting_only)
        source = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("space_source")
    except (OSError, yaml.YAMLError, AttributeError):
        source = None
    if isinstance(source, str) and source:
        command += f" --trust-space {source}"
    return f"the same torchrun launch of `{command}`" if dist.active() else f"`{command}`"


def _resume_hint() -> str | None:
    run = last_opened()
    if run is not None and (run / "checkpoints" / CHECKPOINT).is_file():
        return f"the last checkpoint is intact: rerun with {resume_command(run)}"
    return None


dist.resume_hint = _resume_hint
_HELD: dict[Path, list] = {}  # run directory -> [open lock file, number of RunDir objects of this process using it]


def _is_run_dir(path: Path) -> bool:
    """Whether ``path`` was written by a run (one stopped before its first checkpoint included)."""
    return any((path / name).exists() for name in ("config.yaml", "metrics.jsonl", "checkpoints", LOCK))


def _acquire(path: Path) -> None:
    """Take the run directory's lock for this process (re-entrant within one process)."""
    key = path.resolve()
    if key in _HELD:
        _HELD[key][1] += 1
        return
    try:  # never through a link: a .lock that points elsewhere would make enas write there
        fd = os.open(key / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError:
        if (key / LOCK).is_symlink():
            raise UserError(f"{key / LOCK} is a symbolic link; enas does not write through links: remove it or "
                            "choose another --out") from None
        raise
    f = os.fdopen(fd, "r+")
    # The lock is taken on the directory itself, so that deleting or replacing .lock (which only tells the holder's
    # pid) cannot let a second process in.
    directory = os.open(key, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(directory, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        owner = f.read().strip() or "unknown"
        f.close()
        os.close(directory)
        raise UserError(f"{path} is in use by another enas process (pid {owner}); wait for it to end or choose "
                        "another --out") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _HELD[key] = [f, 1, directory]


def _release(path: Path) -> None:
    key = path.resolve()
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _HELD[key]
        held[0].close()
        os.close(held[2])  # closing the directory releases the flock


class RunDir:
    """A run directory. ``resume=False`` refuses a directory that already holds a checkpoint. With ``lock`` (the
    default) the directory is locked for this process until `close` (or the process ends): a second process that
    opens it for writing is refused with a one-line error."""

    def __init__(self, path: str | os.PathLike, resume: bool = False, lock: bool = True):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self._locked = False
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"{self.path} is a file, not a run directory; choose another --out")
        if resume:
            if not self.checkpoint_path.is_file():
                raise UserError(f"nothing to resume: {self.checkpoint_path} does not exist; start without --resume")
        elif self.checkpoint_path.is_file():
            raise UserError(f"{self.path} already holds a run; pass --resume to continue it or choose another --out")
        elif self.path.is_dir() and not _is_run_dir(self.path) and any(self.path.iterdir()):
            raise UserError(f"{self.path} is a folder with other files, not a run directory; enas writes only into a "
                            "new or empty folder or one of its run directories: choose another --out")
        created = self.created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the run directory {self.path} ({e.strerror}); choose another --out") \
                from None
        _OPENED.append(self.path)
        if lock:
            try:
                _acquire(self.path)
            except UserError:
                raise
            except OSError as e:
                if created:
                    _remove_if_empty(self.path)
                raise UserError(f"cannot write into {self.path} ({e.strerror}); choose another --out") from None
            self._locked = True
        self.ckpt_dir.mkdir(exist_ok=True)
        for tmp in self.ckpt_dir.glob(f".{CHECKPOINT}*.tmp"):  # left by a process killed while saving
            if lock:
                tmp.unlink(missing_ok=True)
        if not resume and self.metrics_path.is_file():
            # left by a run stopped before its first checkpoint: nothing in it can be resumed
            self.metrics_path.unlink()
        self._tb = None

    def abandon(self) -> None:
        """Release the lock and, when this start created the directory and wrote nothing into it, remove it."""
        self.close()
        if getattr(self, "created", False):
            try:
                if self.ckpt_dir.is_dir() and not any(self.ckpt_dir.iterdir()):
                    self.ckpt_dir.rmdir()
            except OSError:
                pass
            _remove_if_empty(self.path)

    #: what a start writes before its first checkpoint: a run that fails there keeps nothing else of value
    START_FILES = ("config.yaml", "metrics.jsonl", "arch.json", "environment.json")

    def discard_unstarted(self) -> None:
        """After a failure before the first checkpoint of a run this start created: remove what the start wrote
        (`START_FILES`) and the directory, so that a failing model (a user's forward that raises) leaves no run
        directory behind. Anything else in it, or a checkpoint, keeps the directory as it is."""
        if not getattr(self, "created", False) or self.checkpoint_path.is_file():
            return
        self.close()
        for name in self.START_FILES:
            (self.path / name).unlink(missing_ok=True)
        self.abandon()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Around a run's work: an error (not an interrupt) before the first checkpoint discards what the start
        wrote (`discard_unstarted`); the lock is released however it ends. The lock goes with the run, not with the
        object that ran it (which reference cycles may keep alive)."""
        try:
            yield
        except Exception:
            self.discard_unstarted()
            raise
        finally:
            self.close()

    def close(self) -> None:
        """Release the lock (idempotent); the object can still be read from."""
        if self._locked:
            self._locked = False
            _release(self.path)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass

    @property
    def checkpoint_path(self) -> Path:
        return self.path / "checkpoints" / CHECKPOINT

    # --- metrics -----------------------------------------------------------------------------------------------
    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    def log(self, kind: str, **fields: Any) -> None:
        """Append one JSON line; also mirror numeric epoch fields to TensorBoard when available."""
        record = {"kind": kind, **_clean(fields)}
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")
        if kind == "epoch":
            self._tensorboard(record)

    def truncate_metrics(self, after_epoch: int) -> None:
        """Drop lines written after ``after_epoch`` ended (a resumed run rewrites them identically)."""
        if not self.metrics_path.is_file():
            return
        keep = []
        for line in self._metric_lines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and rec.get("epoch", -1) <= after_epoch:
                keep.append(line)
        atomic_write_text(self.metrics_path, "".join(x + "\n" for x in keep))

    def _metric_lines(self) -> list[str]:
        """The lines of metrics.jsonl; a file that is not text is a one-line error."""
        try:
            return self.metrics_path.read_bytes().decode("utf-8").splitlines()
        except UnicodeDecodeError:
            raise UserError(f"{self.metrics_path} is not a text file (corrupted?); move it away to continue this "
                            "run without its history") from None

    def read_metrics(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The records of metrics.jsonl (of one ``kind``); unreadable lines are skipped with one warning."""
        if not self.metrics_path.is_file():
            return []
        out, bad = [], 0
        for line in self._metric_lines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if isinstance(rec, dict) and (kind is None or rec.get("kind") == kind):
                out.append(rec)
        if bad and not getattr(self, "_warned", False):
            self._warned = True
            print(f"warning: skipped {bad} unreadable line(s) of {self.metrics_path}", file=sys.stderr)
        return out

    def _tensorboard(self, record: dict[str, Any]) -> None:
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter  # optional: tensorboard may be absent
            except Exception:  # the tensorboard package is optional
                self._tb = False
                return
            self._tb = SummaryWriter(log_dir=str(self.path))
        if self._tb is False:
            return
        step = record.get("epoch", 0)
        for k, v in record.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch":
                self._tb.add_scalar(k, v, step)
        self._tb.flush()

    # --- files -------------------------------------------------------------------------------------------------
    def write_text(self, name: str, text: str) -> Path:
        path = self.path / name
        atomic_write_text(path, text)
        return path

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, json.dumps(_clean(obj), indent=2, default=_json_default) + "\n")

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Write ``state`` atomically, with the digest of its content (`content_digest`) that resume verifies."""
        if isinstance(state, dict):
            state = {**state, CHECKSUM_KEY: content_digest(state)}
        atomic_write_bytes(self.checkpoint_path, lambda f: torch.save(state, f))

    def load_checkpoint(self, map_location: Any = "cpu") -> dict[str, Any]:
        """The last checkpoint as stored: its ``config`` a plain dict (`enas.presets.checkpoint_config` rebuilds it)."""
        try:
            ckpt = load_tensors(self.checkpoint_path, map_location)
        except UnsafeFileError:
            raise
        except Exception as e:
            raise UserError(f"checkpoint {self.checkpoint_path} cannot be read ({type(e).__name__}); it may be "
                            f"truncated: delete it to start the run again in {self.path}, or use another --out") \
                from None
        if not isinstance(ckpt, dict) or "epoch" not in ckpt:
            raise UserError(f"{self.checkpoint_path} is not a checkpoint written by enas; delete it to start the run "
                            f"again in {self.path}, or use another --out")
        stored = ckpt.pop(CHECKSUM_KEY, None)  # checkpoints written before checksums have none
        if stored is not None and stored != content_digest(ckpt):
            raise UserError(f"checkpoint {self.checkpoint_path} is corrupted (its content does not match the checksum "
                            f"written with it); delete it to start the run again in {self.path}, or use another --out")
        return ckpt


class PeerRunDir(RunDir):
    """The run directory as the ranks other than 0 of a distributed run see it (`open_run_dir`):
    the same methods, but it never creates, locks or writes anything, since rank 0 owns the directory. It reads the
    checkpoint (each rank loads it to resume) and no metrics (the history only feeds rank 0's logs and plots)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.ckpt_dir = self.path / "checkpoints"
        self._locked, self.created, self._tb = False, False, False
        _OPENED.append(self.path)  # a rank that loses rank 0 names the resume command too

    def load_checkpoint(self, map_location: Any = "cpu") -> dict[str, Any]:
        if not self.checkpoint_path.is_file():  # rank 0 found it: this rank does not see rank 0's disk
            raise UserError(f"{self.checkpoint_path} exists on rank 0 but not on this machine; put --out on a file "
                            "system every machine shares to resume a run of several machines")
        return super().load_checkpoint(map_location)

    def read_metrics(self, kind: str | None = None) -> list[dict[str, Any]]:
        return []

    def log(self, kind: str, **fields: Any) -> None:
        pass

    def truncate_metrics(self, after_epoch: int) -> None:
        pass

    def write_text(self, name: str, text: str) -> Path:
        return self.path / name

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        """Nothing to release: a peer holds no lock."""

    def abandon(self) -> None:
        pass


def open_run_dir(out: str | os.PathLike, resume: bool, command: str = "") -> RunDir:
    """``RunDir(out, resume)`` in one process and on rank 0 of a distributed run; a `PeerRunDir` that reads but
    never writes on the other ranks. Rank 0's success or `UserError` is broadcast, so every rank fails alike
    instead of waiting for a rank that is gone. ``command`` ("search", "train") goes into the resume hints."""
    if command:
        _COMMAND_OF[Path(out)] = command
    if not dist.active():
        return RunDir(out, resume=resume)
    run_dir = error = None
    if dist.is_main():
        try:
            run_dir = RunDir(out, resume=resume)
        except UserError as e:
            error = e
    message = dist.broadcast_object(None if error is None else str(error))
    if error is not None:
        raise error
    if message is not None:
        raise UserError(message)
    return run_dir if run_dir is not None else PeerRunDir(out)


def _remove_if_empty(path: Path) -> None:
    """Remove a run directory this start created, when nothing but the lock file is in it."""
    try:
        if all(p.name == LOCK for p in path.iterdir()):
            (path / LOCK).unlink(missing_ok=True)
            path.rmdir()
    except OSError:
        pass
