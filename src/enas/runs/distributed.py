"""Data parallelism under ``torchrun``: one process per device, each computing on its share of every minibatch.

``torchrun --nproc_per_node=N -m enas search|train ...`` starts N copies of one command; `init` joins them when
``WORLD_SIZE`` > 1. Everything here is an identity or a no-op in one process, whose path neither changes nor slows.
The copies stay one run (docs/distributed.md) because: the same program and seed make the replicated controller, the
uniform sampler and the tasks' generators draw the same values on every rank, so all ranks sample the same arch at
every step without sending it (`ArchDigest` verifies it after every phase); each task draws every *global* batch as
one process would and keeps its rank's share (`enas.tasks.base.Task.shard`), all-reducing its rewards and metrics;
after each backward the gradients that exist (the sampled path's, the same set on every rank) are averaged in one
coalesced all-reduce (`average_gradients`), which was faster here than DistributedDataParallel with the
``find_unused_parameters=True`` that a path changing every step needs; only rank 0 writes
(`enas.runs.rundir.open_run_dir`). A dead or stuck rank makes the others fail with one line within ``ENAS_DIST_TIMEOUT``
seconds (default 300).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from enas.errors import UserError

TIMEOUT_ENV = "ENAS_DIST_TIMEOUT"
DEFAULT_TIMEOUT = 300.0  # seconds

_rank, _world = 0, 1  # set by `init`; module globals so that the single-process checks cost nothing


def requested() -> bool:
    """True when this process was started by torchrun (or by hand) as one of several (``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def init() -> bool:
    """Join the process group when `requested` (idempotent); returns whether this run is distributed. With CUDA one
    group serves both devices (gloo for the small CPU collectives of metrics and digests, NCCL for CUDA tensors)."""
    global _rank, _world
    if _world > 1 or not requested():
        return _world > 1
    if not tdist.is_available():
        raise UserError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed; run one process")
    try:
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    except ValueError:
        raise UserError(f"{TIMEOUT_ENV} must be a number of seconds, got {os.environ[TIMEOUT_ENV]!r}") from None
    backend, local = "gloo", _local_rank()
    if torch.cuda.is_available() and local < torch.cuda.device_count():
        torch.cuda.set_device(local)
        backend = "cpu:gloo,cuda:nccl"
    if not tdist.is_initialized():
        try:
            tdist.init_process_group(backend, timeout=timedelta(seconds=timeout))
        except (RuntimeError, ValueError) as e:  # rendezvous failures (DistNetworkError, DistStoreError, ...)
            raise UserError(f"cannot join the other processes ({_first_line(e)}); check the torchrun rendezvous "
                            "settings (docs/distributed.md)") from None
    _rank, _world = tdist.get_rank(), tdist.get_world_size()
    return _world > 1


def _first_line(e: BaseException) -> str:
    """The gist of a torch.distributed error: its first line without gloo's source location, at most 120 chars."""
    line = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return re.sub(r"^\[[^\]]*\]\s*", "", line)[:120]


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def destroy() -> None:
    global _rank, _world
    if _world > 1:
        with contextlib.suppress(Exception):  # a peer may be gone already
            tdist.destroy_process_group()
    _rank, _world = 0, 1


def active() -> bool:
    return _world > 1


def rank() -> int:
    return _rank


def world() -> int:
    return _world


def is_main() -> bool:
    return _rank == 0


def device(resolved: torch.device) -> torch.device:
    """Under torchrun a CUDA device means this process's GPU, ``cuda:LOCAL_RANK``."""
    if _world > 1 and resolved.type == "cuda":
        if _local_rank() >= torch.cuda.device_count():
            raise UserError(f"local rank {_local_rank()} has no GPU of its own ({torch.cuda.device_count()} "
                            "visible): start at most one process per GPU (--nproc_per_node)")
        return torch.device("cuda", _local_rank())
    return resolved


#: what a user should do to continue after losing a peer: set by `enas.runs.rundir` (the run it opened last)
resume_hint: Callable[[], str | None] | None = None


@contextlib.contextmanager
def _collective(what: str) -> Iterator[None]:
    """Turn a collective that failed because a peer died or timed out into one line saying what to do."""
    try:
        yield
    except RuntimeError as e:  # torch.distributed's errors (DistBackendError, timeouts) are RuntimeErrors
        hint = (resume_hint() if resume_hint is not None else None) or "run the command again"
        raise UserError(f"rank {_rank} lost the other processes during {what} ({_first_line(e)}): another rank "
                        f"failed (see its message), was killed or timed out ({TIMEOUT_ENV}); {hint}") from None


def all_reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Sum each value over the ranks (one float64 all-reduce); identity in a single process."""
    if _world == 1:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64)
    with _collective("an all-reduce of metrics"):
        tdist.all_reduce(t)
    return dict(zip(values, t.tolist()))


def all_reduce_mean(value: float | torch.Tensor) -> float | torch.Tensor:
    """The mean over the ranks of a float or a tensor (a tensor is reduced in place and returned)."""
    if _world == 1:
        return value
    if isinstance(value, torch.Tensor):
        with _collective("an all-reduce"):
            tdist.all_reduce(value)
        return value.div_(_world)
    return all_reduce_sums({"v": float(value)})["v"] / _world


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Every rank's ``t`` (the same shape on each) concatenated along dim 0, in rank order."""
    if _world == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(_world)]
    with _collective("a gather"):
        tdist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable)."""
    if _world == 1:
        return obj
    box = [obj]
    with _collective("a broadcast"):
        tdist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if _world > 1:
        with _collective("a barrier"):
            tdist.barrier()


def _coalesced(tensors: list[torch.Tensor], op: str) -> None:
    """All-reduce-average (``op="mean"``) or broadcast from rank 0 (``"broadcast"``) a list of tensors in place,
    one flat buffer per dtype and device."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    for group in groups.values():
        flat = _flatten_dense_tensors(group)
        with _collective("gradient averaging" if op == "mean" else "a broadcast of weights"):
            if op == "mean":
                tdist.all_reduce(flat)
                flat.div_(_world)
            else:
                tdist.broadcast(flat, src=0)
        for t, synced in zip(group, _unflatten_dense_tensors(flat, group)):
            t.copy_(synced)


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace every existing gradient by its mean over the ranks. A parameter off the sampled path has no gradient
    on any rank (same arch everywhere) and keeps none, exactly as in one process (SGD then leaves it alone)."""
    if _world > 1:
        _coalesced([p.grad for p in params if p.grad is not None], "mean")


def average_buffers(module: nn.Module) -> None:
    """Average the floating-point buffers (BN running statistics) over the ranks, so that every rank evaluates and
    rank 0 saves the same model. The running mean then equals one process's on the global batches; the running
    variance is the mean of the shards' (it misses the spread between shards)."""
    if _world > 1:
        _coalesced([b for b in module.buffers() if b.is_floating_point()], "mean")


def broadcast_tensors(tensors: Iterable[torch.Tensor]) -> None:
    """Overwrite the tensors with rank 0's (e.g. parameters and optimizer state after a restore)."""
    if _world > 1:
        with torch.no_grad():
            _coalesced(list(tensors), "broadcast")


class RankRandom:
    """The model as the tasks call it on this rank: every call runs on the rank's own random stream (dropout,
    drop-path masks). The global generators stay in step across ranks (the controller samples from them), so without
    it every rank would draw rank 0's masks for its rows, and a forward over fewer rows on one rank (the last batch
    of an evaluation) would put the ranks' controllers out of step. Other attributes (``init_hidden``) are the
    model's. `start_epoch` seeds the stream from (seed, rank, epoch), so a resumed run replays the same masks."""

    def __init__(self, module: nn.Module, seed: int, device: torch.device):
        self._module, self._seed = module, seed
        self._cuda = device if device.type == "cuda" else None
        self._state: list[torch.Tensor] = []
        self.start_epoch(0)

    def start_epoch(self, epoch: int) -> None:
        seed = int.from_bytes(hashlib.blake2b(f"{self._seed} {_rank} {epoch}".encode(), digest_size=7).digest(), "big")
        with torch.random.fork_rng(devices=[self._cuda] if self._cuda is not None else []):
            torch.default_generator.manual_seed(seed)
            self._state = [torch.get_rng_state()]
            if self._cuda is not None:
                torch.cuda.manual_seed(seed)  # this rank's GPU (`init` made it the current device)
                self._state.append(torch.cuda.get_rng_state(self._cuda))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        shared = self._swap(self._state)
        try:
            return self._module(*args, **kwargs)
        finally:
            self._state = self._swap(shared)

    def _swap(self, states: list[torch.Tensor]) -> list[torch.Tensor]:
        """Install ``states`` (CPU, then CUDA) as the global generators' and return the ones they replace."""
        old = [torch.get_rng_state()]
        torch.set_rng_state(states[0])
        if self._cuda is not None:
            old.append(torch.cuda.get_rng_state(self._cuda))
            torch.cuda.set_rng_state(states[1], self._cuda)
        return old

    def __getattr__(self, name: str) -> Any:
        module = self.__dict__.get("_module")  # absent while copying: no recursion
        if module is None:
            raise AttributeError(name)
        return getattr(module, name)


class ArchDigest:
    """A running hash of the architectures a rank used; `check` compares it across ranks (one small all-gather) and
    raises on every rank if they differ, so that no rank goes on alone with a different arch."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=8)
        self.count = 0

    def add(self, arch: Any) -> None:
        self._hash.update(str(arch.to_fixed_arc()).encode() + b"\n")
        self.count += 1

    def check(self, where: str) -> None:
        if _world == 1:
            return
        mine = torch.tensor([int.from_bytes(self._hash.digest(), "little", signed=True), self.count])
        every = [torch.empty_like(mine) for _ in range(_world)]
        with _collective("the architecture check"):
            tdist.all_gather(every, mine)
        odd = [r for r, t in enumerate(every) if not torch.equal(t, every[0])]
        if odd:
            raise UserError(f"the ranks sampled different architectures during {where} (rank(s) {odd} differ from "
                            "rank 0): they must run the same command, seed and versions on identical software; "
                            "resume from the last checkpoint, and report it if it happens again")

