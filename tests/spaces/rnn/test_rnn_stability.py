"""Bounded recurrence of final recurrent models (``model.final_batch_norm``, docs/results.md "Why derived recurrent
cells diverged, and the fix").

Without it, a cell whose nodes are identity or ReLU maps h_{t-1} to h_t piecewise linearly: once training has
grown its weights, the per-step gain passes 1 and h_t grows geometrically over the window. With per-node batch
norm each node's new state mixes its input with a normalised term (|z| <= sqrt(B - 1) for batch statistics and
scale 1, offset 0), so by induction no state ever exceeds that bound, whatever the weights.
"""

import math

import pytest
import torch

from enas.presets import make_config
from enas.spaces.base import TaskInfo
from enas.spaces.rnn.arch import RnnArch, RnnNode
from enas.spaces.rnn.space import RnnSpace, RnnSpaceConfig
from enas.train.optim import make_sgd, sgd_step

V, H, B = 50, 16, 8
NO_DROPOUT = dict(dropout_word=0.0, dropout_emb=0.0, dropout_x=0.0, dropout_h=0.0, dropout_out=0.0)


def chain(acts: list[str], output: str = "loose_ends") -> RnnArch:
    """Node l reads node l - 1."""
    return RnnArch((RnnNode(None, acts[0]), *(RnnNode(l - 1, a) for l, a in enumerate(acts[1:], start=1))), output)


UNBOUNDED_CELLS = {
    "identity": chain(["identity"] * 6),
    "relu": chain(["relu"] * 6),
    "mixed": RnnArch((RnnNode(None, "identity"), RnnNode(0, "sigmoid"), RnnNode(0, "relu"), RnnNode(1, "tanh"),
                      RnnNode(0, "identity"), RnnNode(2, "identity"), RnnNode(2, "relu"))),  # diverged on PTB
}


def run_long(arch: RnnArch, final_batch_norm: bool, cell: str, steps: int = 120) -> torch.Tensor:
    """The outputs (T, B, H) of a final child with large weights (U(+-1)) over ``steps`` steps, in training mode."""
    sp = RnnSpace(RnnSpaceConfig(hidden=H, num_nodes=len(arch.nodes), init_range=1.0, cell=cell,
                                 final_batch_norm=final_batch_norm, **NO_DROPOUT))
    torch.manual_seed(0)
    child = sp.build_child(arch, TaskInfo(vocab_size=V), final=True).train()
    x = torch.randint(0, V, (steps, B), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        _, _, extras = child(x, child.init_hidden(B))
    return extras["outputs"]


@pytest.mark.parametrize("name", sorted(UNBOUNDED_CELLS))
def test_identity_and_relu_cells_explode_without_the_bound(name):
    outputs = run_long(UNBOUNDED_CELLS[name], final_batch_norm=False, cell="path")
    assert not torch.isfinite(outputs).all() or outputs.abs().max() > 1e6


@pytest.mark.parametrize("cell", ["path", "reference", "graph"])
@pytest.mark.parametrize("name", sorted(UNBOUNDED_CELLS))
def test_final_batch_norm_bounds_the_hidden_state(name, cell):
    outputs = run_long(UNBOUNDED_CELLS[name], final_batch_norm=True, cell=cell)
    assert outputs.abs().max() <= math.sqrt(B - 1) + 1e-4


def test_final_batch_norm_off_builds_the_final_child_as_before():
    arch = UNBOUNDED_CELLS["mixed"]
    cfg = dict(hidden=H, num_nodes=len(arch.nodes), **NO_DROPOUT)
    plain = RnnSpace(RnnSpaceConfig(**cfg)).build_child(arch, TaskInfo(vocab_size=V), final=True)
    assert not any("bn" in name for name in plain.state_dict())
    bounded = RnnSpace(RnnSpaceConfig(final_batch_norm=True, **cfg)).build_child(arch, TaskInfo(vocab_size=V))
    searched = RnnSpace(RnnSpaceConfig(**cfg)).build_child(arch, TaskInfo(vocab_size=V), final=False)
    # the bounded final child is the search-time child: the same parameters, the same function
    assert bounded.state_dict().keys() == searched.state_dict().keys()
    bounded.load_state_dict(searched.state_dict())
    x = torch.randint(0, V, (7, B), generator=torch.Generator().manual_seed(2))
    for mode in (True, False):
        a = bounded.train(mode)(x, bounded.init_hidden(B))[0]
        b = searched.train(mode)(x, searched.init_hidden(B))[0]
        assert torch.allclose(a, b)


def test_demo_final_training_of_an_all_identity_cell_stays_finite():
    """A few steps of the demo train preset (hidden 64, lr 10, clip 0.25) on an all-identity cell."""
    cfg = make_config("rnn", "demo", "train")
    assert cfg.model.final_batch_norm
    arch = chain(["identity"] * 8)
    cfg.model.num_nodes = len(arch.nodes)
    torch.manual_seed(0)
    vocab, batch = 500, cfg.task.batch_size
    model = RnnSpace(cfg.model).build_child(arch, TaskInfo(vocab_size=vocab), final=True).train()
    optimizer = make_sgd(model.parameters(), cfg.train.optim)
    zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float)
    data = torch.multinomial(zipf, 5 * 16 * batch, replacement=True, generator=torch.Generator().manual_seed(0))
    hidden = model.init_hidden(batch)
    for window in data.view(5, 16, batch):
        logits, hidden, extras = model(window[:-1], hidden)
        hidden = hidden.detach()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), window[1:].reshape(-1))
        sgd_step(optimizer, model, loss + cfg.task.activation_reg * extras["outputs"].pow(2).mean(),
                 cfg.train.optim.grad_clip)
        assert torch.isfinite(loss) and extras["outputs"].abs().max() <= math.sqrt(batch - 1) + 1e-4


def test_a_config_stored_before_the_option_keeps_its_unbounded_model():
    """A demo model file written before ``model.final_batch_norm`` existed has no batch-norm weights: reading its
    config must not switch the bound on (the preset now does)."""
    from enas.presets import config_from_dict

    stored = make_config("rnn", "demo", "train").to_dict()
    assert stored["model"].pop("final_batch_norm") is True
    assert config_from_dict(stored, "train")[0].model.final_batch_norm is False
    stored["model"]["final_batch_norm"] = True
    assert config_from_dict(stored, "train")[0].model.final_batch_norm is True
