import pytest

from enas.config import Config, OptimConfig, apply_dict, dump_yaml, flatten, parse_set, set_key
from enas.errors import ConfigError
from enas.presets import make_config


def test_set_key_types_and_errors():
    cfg = make_config("rnn", "demo")
    set_key(cfg, "search.epochs", 7)
    set_key(cfg, "search.optim.lr", 3)  # int -> float
    assert cfg.search.epochs == 7 and isinstance(cfg.search.optim.lr, float)
    set_key(cfg, "search.optim.grad_clip", None)
    assert cfg.search.optim.grad_clip is None
    with pytest.raises(ConfigError, match="did you mean"):
        set_key(cfg, "search.epoch", 3)
    with pytest.raises(ConfigError, match="integer"):
        set_key(cfg, "search.epochs", 2.5)
    with pytest.raises(ConfigError, match="true or false"):
        set_key(cfg, "search.derive_greedy", "maybe")
    with pytest.raises(ConfigError, match="section"):
        set_key(cfg, "search.optim", 3)


def test_parse_set_yaml_values():
    assert parse_set(["a.b=3", "c=[1, 2]", "d=none", "e=hello", "f=1e-3"]) == [
        ("a.b", 3), ("c", [1, 2]), ("d", None), ("e", "hello"), ("f", 1e-3)]
    with pytest.raises(ConfigError):
        parse_set(["novalue"])


def test_every_preset_builds_and_round_trips_through_yaml():
    import yaml

    for space, data in (("rnn", "ptb"), ("macro", "cifar10"), ("micro", "fashion-mnist")):
        for preset in ("paper", "quick", "demo"):
            for command in ("search", "train"):
                cfg = make_config(space, preset, command, data)
                raw = yaml.safe_load(dump_yaml(cfg))
                again = make_config(space, "paper", command, data)
                apply_dict(again, raw)
                assert flatten(again) == flatten(cfg), (space, preset, command)


def test_bad_space_data_pairs():
    with pytest.raises(ConfigError, match="--data ptb"):
        make_config("rnn", "paper", "search", "cifar10")
    with pytest.raises(ConfigError, match="image classifiers"):
        make_config("micro", "paper", "search", "ptb")
    with pytest.raises(ConfigError, match="unknown preset"):
        make_config("micro", "fast")
    with pytest.raises(ConfigError, match="unknown dataset"):
        make_config("macro", "paper", "search", "imagenet")


def test_paper_presets_follow_the_spec():
    rnn = make_config("rnn", "paper")
    assert rnn.model.num_nodes == 12 and rnn.search.optim.lr == 20.0 and rnn.search.optim.grad_clip == 0.25
    assert rnn.controller.temperature == 5.0 and rnn.controller.tanh_constant == 2.5 and rnn.task.reward_c == 80
    macro = make_config("macro", "paper")
    assert macro.model.num_layers == 12 and macro.controller.skip_weight == 0.8 and macro.search.epochs == 310
    micro = make_config("micro", "paper", "train")
    assert micro.train.epochs == 630 and micro.task.cutout == 16 and micro.model.drop_path_keep == 0.6
    assert micro.train.optim.lr_min == 0.0001 and micro.model.channels == 36 and micro.model.num_layers == 15


def test_flatten_lists_dotted_keys():
    keys = flatten(Config(model=OptimConfig(), task=OptimConfig()))
    assert "search.optim.lr" in keys and "controller.lstm_size" in keys and "model.lr" in keys
