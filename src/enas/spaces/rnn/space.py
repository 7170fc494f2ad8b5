"""The recurrent-cell search space (spec 2.1, 3.2): decisions, the weight-sharing supernet and the child.

Two variants:

* ``paper``: the controller picks node 0's activation, then for every later node the node it reads (attention
  with the distance prior) and its activation; the output is the mean of the loose ends.
* ``corrected``: the authors' corrected code: node 0 is a fixed tanh (an anchor step only, nothing sampled) and the
  output is the mean of nodes 1.. .

Weight sharing: one (H, 2H) matrix [pre-activation | highway gate] per (node l, previous node j) shared by all
activations, as the paper describes; ``weights_per_activation=True`` gives one matrix per (l, j, activation) and
one node-0 matrix per activation, as both of the authors' codes hold them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from enas.errors import ArchError, ConfigError
from enas.kernels.compiled import check_cell_options
from enas.spaces.base import Action, Decision, Space, TaskInfo
from enas.spaces.rnn.arch import ACTIVATIONS, RnnArch, RnnNode
from enas.spaces.rnn.cell import CellWeights
from enas.spaces.rnn.model import CellLM, Dropouts

VARIANTS = ("paper", "corrected")
@dataclass
class RnnSpaceConfig:
    """Sizes and regularisers of the recurrent space. Drop rates, not keep rates.

    Defaults are the search settings of the authors' first code (spec 4.1, keep 0.75 / 0.25 / 0.75 / 0.25). That
    code's embedding dropout removes a word's whole vector for the sequence, so its rate is ``dropout_word``.
    """

    num_nodes: int = 12
    activations: tuple[str, ...] = ACTIVATIONS  # the searched set, in vocabulary order
    variant: str = "paper"
    hidden: int = 1000  # = embedding size (tied softmax, no bias)
    batch_norm: bool = True  # per-node BN in the supernet (and in children built with final=False)
    # BN of the averaged output h_t too, as the authors' first code; off by default: with it the shared cell did not
    # train at the paper's learning rate 20 (see docs/fidelity.md)
    batch_norm_output: bool = False
    # per-node BN in the final model too (not in the authors' finals): it bounds the recurrence of cells whose identity
    # and ReLU nodes let h_t grow without limit (each node mixes its input with a normalised term); docs/results.md
    final_batch_norm: bool = False
    init_range: float = 0.04
    dropout_word: float = 0.25  # whole word vectors, one draw per (sequence, word type)
    dropout_emb: float = 0.0  # (B, H) mask on the embeddings
    dropout_x: float = 0.75  # (B, H) mask on x_t entering node 0
    dropout_h: float = 0.25  # (B, H) mask on h_{t-1} entering node 0 ...
    dropout_h_all_nodes: bool = True  # ... and on every node's input, as both of the authors' codes do
    dropout_out: float = 0.75  # (B, H) mask on the cell output before the decoder
    weights_per_activation: bool = False
    cell: str = "path"  # "reference": the plain-autograd cell (enas.spaces.rnn.reference), same results, slower;
    # "graph": the arch as index tensors, one kernel sequence for every arch (enas.spaces.rnn.graph)
    compile_cell: bool = False  # torch.compile the graph cell's time step (CUDA graphs on a GPU); needs cell=graph

    def validate(self) -> None:
        """Raise ConfigError on the first bad value."""
        acts = tuple(self.activations)
        if not acts or any(a not in ACTIVATIONS for a in acts) or len(set(acts)) != len(acts):
            raise ConfigError(f"model.activations must be distinct names from {', '.join(ACTIVATIONS)}; got {acts}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"model.variant must be one of {', '.join(VARIANTS)}; got {self.variant!r}")
        check_cell_options(self.cell, self.compile_cell, ("path", "graph", "reference"))
        least = 2 if self.variant == "corrected" else 1
        if not isinstance(self.num_nodes, int) or self.num_nodes < least:
            raise ConfigError(f"model.num_nodes must be an integer >= {least} for the {self.variant} variant; "
                              f"got {self.num_nodes!r}")
        if not isinstance(self.hidden, int) or self.hidden < 1:
            raise ConfigError(f"model.hidden must be a positive integer; got {self.hidden!r}")
        if not self.init_range > 0:
            raise ConfigError(f"model.init_range must be > 0; got {self.init_range!r}")
        for name in ("word", "emb", "x", "h", "out"):
            rate = getattr(self, f"dropout_{name}")
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"model.dropout_{name} is a drop rate in [0, 1); got {rate!r}")

    def dropouts(self) -> Dropouts:
        return Dropouts(self.dropout_word, self.dropout_emb, self.dropout_x, self.dropout_h, self.dropout_out,
                        self.dropout_h_all_nodes)


def _matrices(count: int, hidden: int) -> nn.ParameterList:
    return nn.ParameterList(nn.Parameter(torch.empty(hidden, 2 * hidden)) for _ in range(count))


def _pair(l: int, j: int) -> int:
    """Index of the (node l, previous node j) pair; its matrices are ``w_skip[pair * K + k]``."""
    return l * (l - 1) // 2 + j


class RnnSupernet(CellLM):
    """All cells of the space on shared weights; ``forward(tokens, hidden, arch)`` runs only ``arch``'s path."""

    def __init__(self, cfg: RnnSpaceConfig, vocab_size: int):
        super().__init__(vocab_size, cfg.hidden, cfg.dropouts(), cfg.init_range, cfg.cell, cfg.compile_cell)
        h, n = cfg.hidden, cfg.num_nodes
        self.num_nodes = n
        self.activations = tuple(cfg.activations)
        self.per_act = cfg.weights_per_activation
        self.k = k = len(self.activations) if self.per_act else 1
        self.k0 = k0 = k if cfg.variant == "paper" else 1  # corrected: node 0 is always tanh
        # One parameter per matrix (not one stacked tensor): the backward of indexing a stacked tensor would fill
        # and accumulate a gradient the size of all of them; unused matrices keep grad None.
        self.w_x = _matrices(k0, h)  # entry k: (H, 2H), node 0's x_t part for activation k
        self.w_h = _matrices(k0, h)  # entry k: (H, 2H), node 0's h_{t-1} part
        self.w_skip = _matrices(n * (n - 1) // 2 * k, h)  # entry pair(l, j) * K + k: (H, 2H)
        if cfg.batch_norm:
            self._add_norms(n, cfg.batch_norm_output)
        self.reset_parameters()

    def _act_index(self, act: str, stacked: int) -> int:
        return self.activations.index(act) if stacked > 1 else 0

    def _check_arch(self, arch: RnnArch) -> None:
        if not isinstance(arch, RnnArch):
            raise ArchError(f"the rnn supernet runs RnnArch, got {type(arch).__name__}")
        if len(arch.nodes) > self.num_nodes:
            raise ArchError(f"the arch has {len(arch.nodes)} nodes; this supernet has {self.num_nodes}")
        if self.per_act:
            for l, node in enumerate(arch.nodes):
                if node.act not in self.activations and not (l == 0 and self.k0 == 1):
                    raise ArchError(f"node {l} uses {node.act}, which is not searched "
                                    f"(activations: {', '.join(self.activations)})")

    def _path(self, arch: RnnArch) -> tuple[Tensor, CellWeights]:
        k0 = self._act_index(arch.nodes[0].act, self.k0)
        nodes = {l: self.w_skip[_pair(l, node.input) * self.k + self._act_index(node.act, self.k)]
                 for l, node in enumerate(arch.nodes) if l > 0}
        return self.w_x[k0], CellWeights(self.w_h[k0], nodes, self._norms())

    def forward(self, tokens: Tensor, hidden: Tensor, arch: RnnArch | None = None):
        """tokens (T, B), hidden (B, H) -> logits (T, B, V), hidden (B, H), {"outputs": (T, B, H)}."""
        if arch is None:
            raise ValueError("the rnn supernet needs the arch to run: model(tokens, hidden, arch=arch)")
        return self._run(tokens, hidden, arch)


class RnnChild(CellLM):
    """A standalone language model for one cell; ``batch_norm=True`` keeps the search-time per-node BN."""

    def __init__(self, arch: RnnArch, cfg: RnnSpaceConfig, vocab_size: int, batch_norm: bool):
        super().__init__(vocab_size, cfg.hidden, cfg.dropouts(), cfg.init_range, cfg.cell, cfg.compile_cell)
        h, n = cfg.hidden, len(arch.nodes)
        self.arch = arch
        self.w_x = nn.Parameter(torch.empty(h, 2 * h))  # (H, 2H)
        self.w_h = nn.Parameter(torch.empty(h, 2 * h))  # (H, 2H)
        self.w_nodes = _matrices(n - 1, h)  # entry l-1: (H, 2H) of node l
        if batch_norm:
            self._add_norms(n, cfg.batch_norm_output)
        self.reset_parameters()

    def _path(self, arch: RnnArch) -> tuple[Tensor, CellWeights]:
        nodes = {l: self.w_nodes[l - 1] for l in range(1, len(arch.nodes))}
        return self.w_x, CellWeights(self.w_h, nodes, self._norms())

    def forward(self, tokens: Tensor, hidden: Tensor, arch: Any = None):
        """tokens (T, B), hidden (B, H) -> logits (T, B, V), hidden (B, H), {"outputs": (T, B, H)}; ``arch`` is
        ignored (the child has one)."""
        return self._run(tokens, hidden, self.arch)


class RnnSpace(Space):
    """The recurrent-cell space; ``RnnSpace(RnnSpaceConfig(...))``."""

    name = "rnn"
    arch_cls = RnnArch

    def __init__(self, config: RnnSpaceConfig | None = None):
        self.config = config if config is not None else RnnSpaceConfig()
        self.config.validate()
        self.acts = tuple(self.config.activations)
        self.paper = self.config.variant == "paper"

    # ---------------------------------------------------------------------------------------------------------
    # decisions and the codec (spec 3.2)
    # ---------------------------------------------------------------------------------------------------------
    def decisions(self) -> list[Decision]:
        na = len(self.acts)
        if self.paper:
            out = [Decision("op", "node0.act", size=na, vocab="rnn_act", new_anchor=True)]
        else:
            out = [Decision("anchor", "node0", new_anchor=True, feed="start")]
        for l in range(1, self.config.num_nodes):
            out.append(Decision("pointer", f"node{l}.input", size=l, new_anchor=True, feed="anchor_scaled",
                                distance_prior=True))
            out.append(Decision("op", f"node{l}.act", size=na, vocab="rnn_act"))
        return out

    def vocabularies(self) -> dict[str, list[str]]:
        return {"rnn_act": list(self.acts)}

    def decode(self, actions: list[Action]) -> RnnArch:
        n = self.config.num_nodes
        expected = 2 * (n - 1) + (1 if self.paper else 0)
        if len(actions) != expected:
            raise ArchError(f"the rnn space expects {expected} actions, got {len(actions)}")
        acts = list(actions)
        node0 = self._act(acts.pop(0), 0) if self.paper else "tanh"
        nodes = [RnnNode(None, node0)]
        for l in range(1, n):
            prev, act = acts[2 * (l - 1)], acts[2 * (l - 1) + 1]
            if isinstance(prev, bool) or not isinstance(prev, int) or not 0 <= prev < l:
                raise ArchError(f"node {l}: input action must be in 0..{l - 1}, got {prev!r}")
            nodes.append(RnnNode(prev, self._act(act, l)))
        return RnnArch(tuple(nodes), "loose_ends" if self.paper else "mean")

    def _act(self, action: Action, node: int) -> str:
        if isinstance(action, bool) or not isinstance(action, int) or not 0 <= action < len(self.acts):
            raise ArchError(f"node {node}: activation action must be in 0..{len(self.acts) - 1}, got {action!r}")
        return self.acts[action]

    def encode(self, arch: Any) -> list[Action]:
        if not isinstance(arch, RnnArch):
            raise ArchError(f"the rnn space takes an rnn architecture, got space {getattr(arch, 'space', arch)!r}")
        n, variant = self.config.num_nodes, self.config.variant
        if len(arch.nodes) != n:
            raise ArchError(f"the arch has {len(arch.nodes)} nodes but this space has {n} "
                            f"(set model.num_nodes={len(arch.nodes)})")
        want = "loose_ends" if self.paper else "mean"
        if arch.output != want:
            raise ArchError(f"the {variant} variant outputs {want!r} but the arch outputs {arch.output!r} "
                            f"(set model.variant={'paper' if arch.output == 'loose_ends' else 'corrected'})")
        for l, node in enumerate(arch.nodes):
            if l == 0 and not self.paper:
                if node.act != "tanh":
                    raise ArchError(f"the corrected variant fixes node 0 to tanh; the arch's node 0 is {node.act}")
            elif node.act not in self.acts:
                raise ArchError(f"node {l} uses {node.act}, which is not searched "
                                f"(model.activations: {', '.join(self.acts)})")
        actions: list[Action] = [self.acts.index(arch.nodes[0].act)] if self.paper else []
        for node in arch.nodes[1:]:
            actions += [node.input, self.acts.index(node.act)]
        return actions

    # ---------------------------------------------------------------------------------------------------------
    # models
    # ---------------------------------------------------------------------------------------------------------
    def build_supernet(self, info: TaskInfo) -> RnnSupernet:
        return RnnSupernet(self.config, _vocab(info))

    def build_child(self, arch: Any, info: TaskInfo, final: bool = True) -> RnnChild:
        if not isinstance(arch, RnnArch):
            raise ArchError(f"the rnn space builds rnn architectures, got space {getattr(arch, 'space', arch)!r}")
        batch_norm = self.config.final_batch_norm if final else self.config.batch_norm
        return RnnChild(arch, self.config, _vocab(info), batch_norm=batch_norm)

    def compile_child(self, model: nn.Module) -> nn.Module:
        """The fast cell's batched weight gradients cannot be traced: the child runs the arch-as-data cell with its
        time step compiled (the same function, tested equal), the rest of the model eager."""
        if not isinstance(model, CellLM):
            raise TypeError(f"expected an rnn child, got {type(model).__name__}")
        model.set_cell("graph", compiled=True)
        return model

    def child_state_from_supernet(self, supernet: nn.Module, arch: Any) -> dict[str, Any]:
        if not isinstance(supernet, RnnSupernet):
            raise TypeError(f"expected an RnnSupernet, got {type(supernet).__name__}")
        supernet._check_arch(arch)
        w_x, weights = supernet._path(arch)
        n = len(arch.nodes)
        state: dict[str, Any] = {"emb": supernet.emb, "w_x": w_x, "w_h": weights.w_h}
        state.update({f"w_nodes.{l - 1}": weights.nodes[l] for l in range(1, n)})
        if supernet.norm_rows:
            for name in ("bn_weight", "bn_bias", "bn_mean", "bn_var"):
                state[name] = getattr(supernet, name)[:n]
            if supernet.bn_output:
                for name in ("out_bn_weight", "out_bn_bias", "out_bn_mean", "out_bn_var"):
                    state[name] = getattr(supernet, name)
        return {k: v.detach().clone() for k, v in state.items()}


def _vocab(info: TaskInfo) -> int:
    if info.vocab_size < 1:
        raise ConfigError("the rnn space builds language models; the task must give a vocabulary size")
    return info.vocab_size


__all__ = ["VARIANTS", "RnnChild", "RnnSpace", "RnnSpaceConfig", "RnnSupernet"]


def fit_config(model: RnnSpaceConfig, arch: Any) -> None:
    """The node count and the output rule of a final model follow its arch (registry hook)."""
    body = arch.to_dict()
    if "nodes" in body:
        model.num_nodes = len(body["nodes"])
        model.variant = "corrected" if body.get("output") == "mean" else "paper"
