"""A space that is only a decision list, for controller and REINFORCE tests; decode returns the actions."""

from __future__ import annotations

from enas.spaces.base import Decision, Space


class FakeSpace(Space):
    name = "fake"

    def __init__(self, decisions: list[Decision], vocabs: dict[str, list[str]]):
        self._decisions, self._vocabs = decisions, vocabs

    def decisions(self):
        return self._decisions

    def vocabularies(self):
        return self._vocabs

    def decode(self, actions):
        return list(actions)

    def encode(self, arch):
        return list(arch)

    def build_supernet(self, info):
        raise NotImplementedError

    def build_child(self, arch, info, final=True):
        raise NotImplementedError

    def child_state_from_supernet(self, supernet, arch):
        raise NotImplementedError
