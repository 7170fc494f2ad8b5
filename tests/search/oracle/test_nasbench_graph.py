"""NAS-Bench-Graph as a space: the arch codec, the decisions the controller walks, and the table lookup (when the
nas-bench-graph package is installed)."""

from __future__ import annotations

import pytest

from enas.errors import ArchError, UserError
from enas.oracle.nasbench_graph import OPS, GraphArch, GraphSpace, GraphTable, all_archs, space_size
from enas.search.controller import Controller, ControllerConfig, UniformSampler
from enas.spaces.base import TaskInfo

ARCH = GraphArch((0, 1, 1, 3), ("gcn", "skip", "gat", "fc"))


def test_codec_round_trips():
    assert GraphArch.from_fixed_arc(ARCH.to_fixed_arc()) == ARCH
    assert GraphArch.from_dict(ARCH.to_dict()) == ARCH
    space = GraphSpace()
    assert space.decode(space.encode(ARCH)) == ARCH
    assert "node 4 = fc(node 3)" in ARCH.describe()


@pytest.mark.parametrize("bad", [((0, 2, 0, 0), OPS[:4]), ((0, 0, 0), OPS[:3]), ((0, 0, 0, 0), ("gcn",) * 3 + ("x",)),
                                 ((0, 0, True, 0), OPS[:4])])
def test_bad_archs_refused(bad):
    with pytest.raises(ArchError):
        GraphArch(*bad)
    with pytest.raises(ArchError):
        GraphArch.from_fixed_arc("0 1 0 9 0 0 0 0")


def test_the_controller_and_the_sampler_walk_it():
    space = GraphSpace()
    ctrl = Controller(space, ControllerConfig(lstm_size=16))
    s = ctrl.sample()
    assert isinstance(s.arch, GraphArch) and s.arch.links[0] == 0
    assert ctrl.score(space.encode(s.arch)).log_prob.item() == pytest.approx(s.log_prob.item(), abs=1e-5)
    seen = {UniformSampler(space).sample().arch.links for _ in range(200)}
    assert len(seen) == 24  # every link pattern: 1 * 2 * 3 * 4
    assert space_size() == len(all_archs()) == 24 * 9 ** 4


def test_no_network():
    with pytest.raises(UserError, match="oracle"):
        GraphSpace().build_supernet(TaskInfo())


def test_unknown_dataset():
    with pytest.raises(UserError, match="cora"):
        GraphTable("proteins")


def test_table_covers_every_arch_and_reads_the_package_entries():
    nbg = pytest.importorskip("nas_bench_graph")
    table = GraphTable("cora")
    raw = nbg.light_read("cora")
    entry = raw[nbg.Arch(list(ARCH.links), list(ARCH.ops)).valid_hash()]
    assert table.scores(ARCH) == (entry["valid_perf"], entry["perf"])
    assert table.scores(GraphArch((0, 0, 0, 0), ("skip",) * 4)) == (0.0, 0.0)
    hashes = {nbg.Arch(list(a.links), list(a.ops)).valid_hash() for a in all_archs() if set(a.ops) != {"skip"}}
    assert hashes == set(raw)  # the isomorphism classes of the space are exactly the table's entries
    # isomorphic archs (two parallel nodes swapped) share an entry
    assert table.scores(GraphArch((0, 0, 1, 1), ("gcn", "gat", "fc", "sage"))) == \
        table.scores(GraphArch((0, 0, 2, 2), ("gat", "gcn", "fc", "sage")))
