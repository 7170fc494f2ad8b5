import pytest

import enas


def test_public_names_resolve():
    for name in enas.__all__:
        assert getattr(enas, name) is not None, name
    with pytest.raises(AttributeError):
        enas.no_such_name  # noqa: B018


def test_published_architectures_load_through_the_api():
    assert enas.parse_fixed_arc("0 0 0 1 1 2 1 2 0 2 0 5 1 1 0 6 1 8 1 8 1 8 1", "rnn").space == "rnn"
    assert enas.parse_fixed_arc("0 2 1 0 2 1 2 2 4 0 5 0 3 2 6 2", "rnn").to_dict()["output"] == "mean"
