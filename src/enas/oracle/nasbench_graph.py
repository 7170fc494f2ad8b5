"""NAS-Bench-Graph (Qin et al., NeurIPS 2022 datasets track; the PyPI package ``nas-bench-graph``, Apache-2.0) as
an ordinary search space, so that the controller can be measured on true scores instead of a supernet's.

The space: 4 computing nodes; node i (1-based) reads the input or one earlier node (``links[i-1]`` in 0..i-1, 0 the
input) and applies one of 9 graph operations. The benchmark trained every distinct architecture (26,206 after
removing isomorphic duplicates) on eight node-classification datasets and ships each one's validation and test
accuracy; an arch is looked up through the package's own canonical hash (``Arch.valid_hash``). The one arch the
benchmark leaves out, all four nodes ``skip`` (no graph operation at all), scores 0, as in the package's own search
examples. Proteins uses another operation list and is not offered here.

The controller's decisions follow the recurrent space's pattern: one anchor step for the input, then per node a
pointer over the anchors recorded so far (the input and the earlier nodes) and an op decision whose LSTM output
becomes that node's anchor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from enas.arch import Arch, parse_ints, register_arch
from enas.errors import ArchError, UserError
from enas.spaces.base import Action, Decision, Space, TaskInfo

OPS = ("gat", "gcn", "gin", "cheb", "sage", "arma", "graph", "fc", "skip")  # the package's gnn_list order
NUM_NODES = 4
DATASETS = ("cora", "citeseer", "pubmed", "cs", "physics", "photo", "computers", "arxiv")
TUNING_DATASETS = ("cora", "citeseer")  # settings are chosen on these two ...
REPORT_DATASETS = tuple(d for d in DATASETS if d not in TUNING_DATASETS)  # ... and reported on these six
SPACE_NAME = "nasbench-graph"


@register_arch
@dataclass(frozen=True)
class GraphArch(Arch):
    """One NAS-Bench-Graph architecture: the input of each node (0 = the graph's features) and its operation."""

    space: ClassVar[str] = SPACE_NAME

    links: tuple[int, ...]
    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "links", tuple(self.links))
        object.__setattr__(self, "ops", tuple(self.ops))
        if len(self.links) != NUM_NODES or len(self.ops) != NUM_NODES:
            raise ArchError(f"a {SPACE_NAME} arch has {NUM_NODES} links and {NUM_NODES} ops, got "
                            f"{len(self.links)} and {len(self.ops)}")
        for i, (link, op) in enumerate(zip(self.links, self.ops)):
            if isinstance(link, bool) or not isinstance(link, int) or not 0 <= link <= i:
                raise ArchError(f"node {i + 1} reads the input (0) or an earlier node (1..{i}), got {link!r}")
            if op not in OPS:
                raise ArchError(f"node {i + 1}: unknown operation {op!r}; choose one of {', '.join(OPS)}")

    def to_dict(self) -> dict[str, Any]:
        return {"links": list(self.links), "ops": list(self.ops)}

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> GraphArch:
        if not isinstance(body, dict) or set(body) != {"links", "ops"}:
            raise ArchError(f"a {SPACE_NAME} arch is {{\"links\": [4 ints], \"ops\": [4 names]}}")
        if not isinstance(body["links"], list) or not isinstance(body["ops"], list):
            raise ArchError(f"a {SPACE_NAME} arch's links and ops are lists")
        return cls(tuple(body["links"]), tuple(body["ops"]))

    def to_fixed_arc(self) -> str:
        return " ".join(f"{link} {OPS.index(op)}" for link, op in zip(self.links, self.ops))

    @classmethod
    def from_fixed_arc(cls, text: str) -> GraphArch:
        values = parse_ints(text)
        if len(values) != 2 * NUM_NODES:
            raise ArchError(f"a {SPACE_NAME} arch is {NUM_NODES} pairs 'link op', got {len(values)} integers")
        if any(v >= len(OPS) for v in values[1::2]):
            raise ArchError(f"operation indices run from 0 to {len(OPS) - 1}")
        return cls(tuple(values[0::2]), tuple(OPS[v] for v in values[1::2]))

    def describe(self) -> str:
        names = ["input"] + [f"node {i + 1}" for i in range(NUM_NODES)]
        return "\n".join(f"node {i + 1} = {op}({names[link]})" for i, (link, op) in enumerate(zip(self.links,
                                                                                              self.ops)))


class GraphSpace(Space):
    """The decisions of NAS-Bench-Graph's space. It has no network: its scores come from `GraphTable`."""

    name = SPACE_NAME
    arch_cls = GraphArch

    def __init__(self, config: Any = None):
        self.config = config

    def decisions(self) -> list[Decision]:
        out = [Decision("anchor", "input", new_anchor=True, feed="start")]
        for i in range(1, NUM_NODES + 1):
            out.append(Decision("pointer", f"node{i}/input", size=i, feed="anchor"))
            out.append(Decision("op", f"node{i}/op", size=len(OPS), vocab="gnn", new_anchor=True))
        return out

    def vocabularies(self) -> dict[str, list[str]]:
        return {"gnn": list(OPS)}

    def decode(self, actions: list[Action]) -> GraphArch:
        if len(actions) != 2 * NUM_NODES:
            raise ArchError(f"expected {2 * NUM_NODES} actions, got {len(actions)}")
        return GraphArch(tuple(int(a) for a in actions[0::2]), tuple(OPS[int(a)] for a in actions[1::2]))

    def encode(self, arch: Arch) -> list[Action]:
        if not isinstance(arch, GraphArch):
            raise ArchError(f"not an arch of the {SPACE_NAME} space")
        out: list[Action] = []
        for link, op in zip(arch.links, arch.ops):
            out += [link, OPS.index(op)]
        return out

    def _no_network(self) -> UserError:
        return UserError(f"the {SPACE_NAME} space is a table of measured scores, not a network: search it with "
                         f"enas.oracle.run(GraphSpace(), GraphTable(dataset).valid, ...)")

    def build_supernet(self, info: TaskInfo) -> nn.Module:
        raise self._no_network()

    def build_child(self, arch: Arch, info: TaskInfo, final: bool = True) -> nn.Module:
        raise self._no_network()

    def child_state_from_supernet(self, supernet: nn.Module, arch: Arch) -> dict[str, Any]:
        raise self._no_network()


class GraphTable:
    """The validation and test accuracy of every arch on one dataset (``DATASETS``), looked up by the package's
    canonical hash; needs ``pip install nas-bench-graph``."""

    def __init__(self, dataset: str):
        if dataset not in DATASETS:
            raise UserError(f"unknown NAS-Bench-Graph dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
        try:
            import nas_bench_graph  # optional: only the benchmark of the controller needs it
        except ImportError:
            raise UserError("NAS-Bench-Graph is not installed: pip install nas-bench-graph") from None
        self.dataset = dataset
        self._hash = nas_bench_graph.Arch
        self._bench = nas_bench_graph.light_read(dataset)
        self._cache: dict[GraphArch, tuple[float, float]] = {}

    def scores(self, arch: GraphArch) -> tuple[float, float]:
        """(validation, test) accuracy of ``arch``; (0, 0) for the all-skip arch, which the benchmark omits."""
        hit = self._cache.get(arch)
        if hit is None:
            if all(op == "skip" for op in arch.ops):
                hit = (0.0, 0.0)
            else:
                key = self._hash(list(arch.links), list(arch.ops)).valid_hash()
                entry = self._bench.get(key)
                if entry is None:
                    raise ArchError(f"{arch.to_fixed_arc()} has no entry in NAS-Bench-Graph's {self.dataset} table")
                hit = (float(entry["valid_perf"]), float(entry["perf"]))
            self._cache[arch] = hit
        return hit

    def valid(self, arch: GraphArch) -> float:
        return self.scores(arch)[0]

    def test(self, arch: GraphArch) -> float:
        return self.scores(arch)[1]

    def best(self) -> tuple[float, float]:
        """The table's highest test accuracy, and the test accuracy of its highest validation accuracy."""
        entries = list(self._bench.values())
        top_valid = max(entries, key=lambda e: (e["valid_perf"], e["perf"]))
        return float(max(e["perf"] for e in entries)), float(top_valid["perf"])

    def __len__(self) -> int:
        return len(self._bench)


def all_archs() -> list[GraphArch]:
    """Every arch of the space (24 link patterns x 9^4 operation tuples), isomorphic ones included."""
    links = [(0, a, b, c) for a in range(2) for b in range(3) for c in range(4)]
    n = len(OPS)
    return [GraphArch(lk, tuple(OPS[(k // n ** p) % n] for p in range(NUM_NODES)))
            for lk in links for k in range(n ** NUM_NODES)]


def space_size() -> int:
    return math.prod(range(1, NUM_NODES + 1)) * len(OPS) ** NUM_NODES
