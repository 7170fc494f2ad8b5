"""What a search space is: an ordered list of decisions, a codec from the controller's actions to an Arch, a
supernet that runs any Arch of the space on shared weights, and a standalone child for one Arch.

The controller never sees modules: it walks `Space.decisions()` and emits one action per decision (an `int` for
"op" and "pointer" decisions, a list of 0/1 bits for "skips"); `Space.decode` turns the action list into an Arch and
`Space.encode` does the reverse (used to score a given Arch under the policy).

Model interfaces (what tasks call):

* language models (recurrent space): ``model(tokens[T, B], hidden[B, H], arch=None) -> (logits[T, B, V], hidden,
  extras)``, ``model.init_hidden(batch_size) -> hidden``; ``extras`` is a dict of auxiliary tensors for
  regularisers (e.g. ``"outputs"`` for the activation penalty). The supernet requires ``arch``; a child ignores it.
* image classifiers (macro, micro): ``model(images[B, C, H, W], arch=None) -> (logits[B, K], aux_logits | None)``;
  ``aux_logits`` is not None only in training mode with an auxiliary head.
* tabular classifiers: ``model(features[B, F], arch=None) -> (logits[B, K], None)``; ``features`` are float32 rows
  of ``TaskInfo.in_features`` standardised numbers (`enas.tasks.tabular`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from torch import nn

from enas.arch import Arch

DecisionKind = Literal["op", "pointer", "skips", "anchor"]
FeedKind = Literal["embedding", "anchor", "anchor_scaled", "skip_mean", "start"]


@dataclass(frozen=True)
class Decision:
    """One step of the controller.

    kind:
        ``op``: choose one entry of the vocabulary ``vocab`` (``size`` entries).
        ``pointer``: choose one of the ``size`` anchors recorded so far in this ``group`` by attention.
        ``skips``: choose a subset of the ``size`` anchors recorded so far (independent sigmoids); ``size`` may be 0.
        ``anchor``: no choice; one LSTM step whose output only becomes an anchor.
    new_anchor: the LSTM output of this step is appended to the group's anchors (for pointer/skips this happens
        after the attention over the existing anchors).
    zero_anchor: the anchor's value (what a later pointer feeds back) is a zero vector, while its attention key is
        still computed from the LSTM output (the authors' micro controller does this for the two cell inputs).
    feed: the next LSTM input: the chosen op's embedding, the chosen anchor, the anchor divided by
        (0.1 + distance) (recurrent controller), the mean (sum / (1 + count)) of the selected skip anchors, or the
        learned start vector.
    distance_prior: pointer only; subtract (l - j)^2 / 6 from the logit of anchor j, l = number of anchors.
    fixed_bias: op only; constant added to the logits after the tanh (the authors' micro normal-cell op prior).
    group: anchors are reset when the group changes (micro: normal cell 0, reduction cell 1).
    """

    kind: DecisionKind
    name: str
    size: int = 0
    vocab: str = ""
    new_anchor: bool = False
    zero_anchor: bool = False
    feed: FeedKind = "embedding"
    distance_prior: bool = False
    fixed_bias: tuple[float, ...] | None = None
    group: int = 0


@dataclass(frozen=True)
class TaskInfo:
    """What a space needs to know of the data to build a network."""

    vocab_size: int = 0  # language modelling
    in_channels: int = 0  # images
    image_size: int = 0  # images are square, image_size x image_size
    num_classes: int = 0  # classification (images, tabular)
    in_features: int = 0  # tabular: features per row


Action = int | list[int]


class Space(ABC):
    """A search space. Subclasses take their own config dataclass in the constructor."""

    name: ClassVar[str]
    arch_cls: ClassVar[type[Arch]]

    @abstractmethod
    def decisions(self) -> list[Decision]:
        """The controller's decision list, in sampling order."""

    @abstractmethod
    def vocabularies(self) -> dict[str, list[str]]:
        """Name of each op vocabulary used by the decisions -> its op names in index order."""

    @abstractmethod
    def decode(self, actions: list[Action]) -> Arch:
        """Actions (one per non-anchor decision, in order) -> Arch."""

    @abstractmethod
    def encode(self, arch: Arch) -> list[Action]:
        """Arch -> actions; the inverse of `decode`. Raises ArchError if the arch does not fit this space."""

    @abstractmethod
    def build_supernet(self, info: TaskInfo) -> nn.Module:
        """The weight-sharing network; its forward takes the Arch to run and computes only that path."""

    @abstractmethod
    def build_child(self, arch: Arch, info: TaskInfo, final: bool = True) -> nn.Module:
        """A standalone network for one Arch. ``final=False`` builds it with the search-time layers (same sizes
        and layer types as the supernet) so that supernet weights can be loaded with `child_state_from_supernet`."""

    @abstractmethod
    def child_state_from_supernet(self, supernet: nn.Module, arch: Arch) -> dict[str, Any]:
        """A state_dict for ``build_child(arch, info, final=False)`` holding the supernet's weights of that path."""

    def compile_child(self, model: nn.Module) -> nn.Module:
        """``model`` (a child of this space) with its forward compiled by ``torch.compile`` (``train.compile``); the
        parameters and the state_dict stay those of ``model``. A space whose child cannot be traced overrides it."""
        model.compile()
        return model

    def check_arch(self, arch: Arch) -> None:
        """Raise ArchError if ``arch`` cannot run in this space (wrong space, wrong size)."""
        self.encode(arch)
