"""The presets of the recurrent-cell space: ``paper`` (spec 2.1, 3.2, 4.1, 6.1; the authors' corrected GPU recipe for
the final training), ``quick`` and ``demo`` (`enas.presets.make_config` fills in the space, data and preset)."""

from __future__ import annotations

from enas.config import Config, OptimConfig, SearchConfig, TrainConfig
from enas.search.controller import ControllerConfig, short_search_settings
from enas.spaces.rnn.space import RnnSpaceConfig
from enas.tasks.text import TextTaskConfig


# Recurrent cell on Penn Treebank (spec 2.1, 3.2, 4.1, 6.1)
def presets(preset: str, command: str) -> Config:
    model = RnnSpaceConfig()  # 12 nodes, 4 activations, highway, per-node BN in the supernet
    task = TextTaskConfig(batch_size=64, bptt=35, reward_c=80.0)
    controller = ControllerConfig(
        lstm_size=100,  # paper (authors' old PTB code: 100 too)
        temperature=5.0, tanh_constant=2.5,  # paper = old code
        entropy_weight=1e-4,  # paper (old code 1e-3)
        entropy_mode="sampled",  # authors' code: -log p(a) * p(a) of the sampled action
        lr=0.00035,  # paper (old code 0.001)
        baseline_decay=0.99,  # old code (paper silent)
        skip_weight=0.0,
        train_steps=2000, num_aggregate=1,  # paper: 2000 controller steps per epoch
    )
    search = SearchConfig(
        epochs=150,  # paper
        optim=OptimConfig(lr=20.0, momentum=0.0, nesterov=False, weight_decay=2 * 1e-7,  # paper lr 20, l2 1e-7
                          grad_clip=0.25, schedule="decay", decay=0.96, decay_start=15),  # paper: x0.96 from epoch 15
        derive_samples=100,
    )
    # Final training: the authors' corrected GPU recipe (spec 6.1, "Errata GPU"). That code adds
    # 8e-7 * sum(w^2) over every variable to the loss, i.e. PyTorch weight_decay = 2 * 8e-7.
    train = TrainConfig(
        epochs=3000,
        optim=OptimConfig(lr=20.0, momentum=0.0, nesterov=False, weight_decay=2 * 8e-7, grad_clip=0.25,
                          schedule="constant"),
        averaging=True, averaging_patience=10,
    )
    if command == "train":
        model.hidden = 800
        model.batch_norm = False
        model.init_range = 0.05
        model.dropout_word, model.dropout_emb, model.dropout_x, model.dropout_out = 0.125, 0.175, 0.725, 0.75
        model.dropout_h = 0.225
        task.variable_bptt = True
        task.activation_reg = 0.7
        task.eval_batch_size = 10
    if preset == "quick":
        model.hidden = 256 if command == "search" else 400
        model.init_range = 0.1 if model.hidden <= 300 else 0.05  # the old code's rule (spec 8.1)
        search.epochs, controller.train_steps = 20, 200
        short_search_settings(controller)
        search.derive_samples = 50
        train.epochs = 60
    elif preset == "demo":
        # A few minutes on a 2-core CPU: a small cell on the first 300k training tokens, light dropout. The shared
        # weights use lr 3; the final training lr 10: at lr 3 a cell made only of tanh and relu nodes (the published
        # one) starts with outputs ~100x smaller than a cell with a sigmoid or identity node and stays at the
        # uniform model (test ppl 9995 after 3 epochs on 100k tokens; 683 at lr 10), and random cells train worse
        # (731/725 at lr 3, 553/581 at lr 10); the paper's lr 20 is better still for most cells (586, 518/488) but
        # sent one derived cell's loss to inf in its first epoch.
        model.hidden = 64
        model.init_range = 0.1  # the old code's rule for hidden <= 300 (spec 8.1)
        model.num_nodes = 8
        # The corrected code's space (node 0 a fixed tanh, output the mean of nodes 1..): an identity node 0 was the
        # first step of the search's collapse to identity cells, whose recurrence is unbounded. Final models keep
        # the per-node batch norm of the search (a bound on h_t): without it, lr 10 x clip 0.25 grew identity and
        # ReLU cells' recurrent gain past 1 within a few steps and their loss went to inf (docs/results.md).
        model.variant = "corrected"
        model.final_batch_norm = True
        model.dropout_word, model.dropout_x, model.dropout_h, model.dropout_out = 0.05, 0.1, 0.05, 0.1
        task.max_tokens = 300_000
        task.batch_size = task.reward_batch_size = 32
        task.eval_batch_size = 64
        search.epochs = 6
        search.optim.lr = 3.0
        train.optim.lr = 10.0
        search.optim.decay, search.optim.decay_start = 0.9, 3
        search.eval_every = 2
        controller.train_steps, controller.num_aggregate = 40, 5
        short_search_settings(controller)
        search.derive_samples = search.derive_uniform = 16
        train.epochs = 6
        train.averaging_patience = 2
    return Config(model=model, task=task, controller=controller, search=search, train=train)
