"""The controller's policy before any update: does a freshly initialised controller sample like uniform sampling?

For the recurrent space it reports the share of nodes (from node 2 on) that read the node right before them, over
200 samples of each of 5 freshly initialised controllers (the `demo` preset's settings and the paper's), against
2,000 uniformly sampled cells. The authors' recurrent controller subtracts (l - j)^2 / 6 from the logit of anchor
j (the distance prior, ENAS_SPEC.md 3.2): a bias towards chains that the controller then has to unlearn.

    python benchmarks/controller_start.py        # seconds on a CPU
"""

import statistics
import sys

import torch
from quality import paper_controller

from enas.build import build_space
from enas.presets import make_config
from enas.search.controller import Controller, UniformSampler


def previous_node_share(archs) -> float:
    return statistics.fmean(1.0 if n.input == l - 1 else 0.0 for a in archs for l, n in enumerate(a.nodes) if l >= 2)


def main() -> int:
    torch.set_num_threads(1)
    cfg = make_config("rnn", "demo", "search")
    space = build_space(cfg)
    torch.manual_seed(0)
    sampler = UniformSampler(space)
    uniform = previous_node_share(sampler.sample().arch for _ in range(2000))
    for label, ccfg in (("demo", cfg.controller), ("paper", paper_controller("rnn", cfg.controller))):
        shares = []
        for seed in range(5):
            torch.manual_seed(seed)
            controller = Controller(space, ccfg)
            with torch.no_grad():
                shares.append(previous_node_share(controller.sample().arch for _ in range(200)))
        share = statistics.fmean(shares)
        print(f"rnn, {label} controller settings: share of nodes reading the previous node {share:.3f} "
              f"(5 fresh controllers x 200 samples); uniform sampling {uniform:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
