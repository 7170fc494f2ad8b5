"""The ENAS controller: an LSTM policy that walks a space's decision list, and a uniform sampler with the same
interface (the random-search baseline).

The controller knows nothing of any particular space. It reads ``space.decisions()`` (see `enas.spaces.base.Decision`
for the four kinds: op, pointer, skips, anchor) and ``space.vocabularies()``, takes one LSTM step per decision, and
hands the actions to ``space.decode``. Every per-space habit of the authors' controllers (temperature, tanh constant,
a reduced tanh for ops, a learnable or fixed op bias, tied op embeddings, distance prior, zero anchors, scaled
anchor feeds) is an option of `ControllerConfig` or a field of the decisions, not a separate class.

Logit shaping, in the order of the authors' code: ``logits /= temperature``; ``logits = c * tanh(logits)``;
``logits += fixed_bias`` (ops) or ``logits -= (l - j)^2 / 6`` (pointers with a distance prior).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from enas.arch import Arch
from enas.errors import ArchError, ConfigError
from enas.spaces.base import Action, Decision, Space

_FEEDS = {  # which next-input rules make sense for each decision kind
    "op": ("embedding", "start"),
    "pointer": ("anchor", "anchor_scaled", "start"),
    "skips": ("skip_mean", "start"),
    "anchor": ("start",),
}


@dataclass
class ControllerConfig:
    """Controller and REINFORCE hyper-parameters (spec section 3). Defaults: the authors' macro CIFAR script."""

    lstm_size: int = 64  # hidden units (paper 100; authors' CIFAR and corrected LM code 64, old PTB code 100)
    lstm_layers: int = 1  # stacked bias-free LSTM cells
    temperature: float | None = None  # logits /= temperature before the tanh; None: skip this step
    tanh_constant: float | None = 1.5  # logits = c * tanh(logits); None: skip this step
    op_tanh_reduce: float = 1.0  # op decisions use tanh_constant / op_tanh_reduce (micro code: 2.5)
    entropy_weight: float = 1e-4  # reward += entropy_weight * entropy (under stop-gradient)
    # "sampled": sum over decisions of -log p(a) * p(a) of the sampled action (macro and PTB code);
    # "full": sum over decisions of the full entropy -sum p log p (micro code)
    entropy_mode: str = "sampled"
    skip_target: float = 0.4  # prior probability of a skip connection (macro)
    skip_weight: float = 0.8  # weight of the skip penalty in the loss; 0 disables it
    baseline_decay: float = 0.99  # b <- b - (1 - decay) * (b - R)
    # "zero": the baseline starts at 0 (the authors' code); "first": at the first sample's reward, so that the
    # first updates do not reinforce whatever happens to be sampled (matters in short searches only)
    baseline_start: str = "zero"
    lr: float = 0.001  # Adam learning rate, constant
    adam_betas: tuple[float, float] = (0.0, 0.999)  # the authors' code uses beta1 = 0
    adam_eps: float = 1e-3  # Adam epsilon as TensorFlow defines it (see adam_tf_eps)
    adam_tf_eps: bool = True  # apply adam_eps as TF does (to sqrt(v) before bias correction); False: as PyTorch
    init_range: float = 0.1  # every parameter starts uniform in [-init_range, init_range]
    op_bias_init: list[float] | None = None  # learnable bias added to op logits, initial values (micro: 10,10,0,0,0)
    tie_op_embedding: bool = False  # op logits = h @ embedding^T (corrected LM code) instead of a separate matrix
    train_steps: int = 50  # controller updates per search epoch
    num_aggregate: int = 20  # sampled architectures whose gradients are averaged per Adam step
    # Not in the paper (docs/fidelity.md): keep the elite_size best distinct archs rewarded so far and add
    # elite_weight * mean(-log pi(elite)) to every update's loss (priority-queue training, Abolafia et al. 2018),
    # so that a short search returns to its best finds; 0 disables it
    elite_size: int = 0
    elite_weight: float = 0.0
    # The authors' recurrent controller subtracts (l - j)^2 / 6 from the logit of anchor j of l wherever the space
    # asks for it (spec 3.2). Off (not in the paper, docs/fidelity.md): pointers start uniform. The prior makes a
    # fresh rnn controller pick the previous node for 53 % of the nodes (uniform: 26 %), a chain bias that a short
    # search cannot unlearn
    distance_prior: bool = True

    def validate(self) -> None:
        """Raise `ConfigError` on a value that cannot work."""
        positive = {
            "lstm_size": self.lstm_size,
            "lstm_layers": self.lstm_layers,
            "train_steps": self.train_steps,
            "num_aggregate": self.num_aggregate,
            "op_tanh_reduce": self.op_tanh_reduce,
            "adam_eps": self.adam_eps,
            "init_range": self.init_range,
        }
        if isinstance(self.elite_size, bool) or not isinstance(self.elite_size, int) or self.elite_size < 0:
            raise ConfigError(f"controller.elite_size must be a non-negative integer, got {self.elite_size!r}")
        if not isinstance(self.distance_prior, bool):
            raise ConfigError(f"controller.distance_prior must be true or false, got {self.distance_prior!r}")
        if not self.elite_weight >= 0:
            raise ConfigError(f"controller.elite_weight must not be negative, got {self.elite_weight!r}")
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"controller.{key} must be positive, got {value!r}")
        for key in ("temperature", "tanh_constant"):
            value = getattr(self, key)
            if value is not None and not value > 0:
                raise ConfigError(f"controller.{key} must be positive or null (disabled), got {value!r}")
        if self.entropy_mode not in ("sampled", "full"):
            raise ConfigError(f"controller.entropy_mode must be 'sampled' or 'full', got {self.entropy_mode!r}")
        if self.baseline_start not in ("zero", "first"):
            raise ConfigError(f"controller.baseline_start must be 'zero' or 'first', got {self.baseline_start!r}")
        if not 0.0 < self.skip_target < 1.0:
            raise ConfigError(f"controller.skip_target must lie strictly between 0 and 1, got {self.skip_target!r}")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ConfigError(f"controller.baseline_decay must lie in [0, 1), got {self.baseline_decay!r}")
        betas = tuple(self.adam_betas)
        if len(betas) != 2 or not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ConfigError(f"controller.adam_betas must be two numbers in [0, 1), got {self.adam_betas!r}")
        if self.lr < 0 or self.skip_weight < 0 or self.entropy_weight < 0:
            raise ConfigError("controller.lr, skip_weight and entropy_weight must not be negative")


@dataclass
class ControllerSample:
    """One sampled architecture and the policy's view of it."""

    arch: Arch  # space.decode(actions)
    actions: list[Action]  # one per non-anchor decision: int (op, pointer) or list of 0/1 bits (skips)
    log_prob: Tensor  # 0-dim, sum over decisions of log pi(a), differentiable
    entropy: Tensor  # 0-dim, per ControllerConfig.entropy_mode, differentiable
    skip_penalty: Tensor  # 0-dim, mean over non-empty skips decisions, differentiable; 0 when there are none
    skip_rate: float  # fraction of skip bits set (0 when there are none)
    logits: list[Tensor] = field(default_factory=list, repr=False)  # shaped logits per choice: (V,), (l,), (l, 2)


def check_decisions(decisions: list[Decision], vocabs: dict[str, list[str]]) -> int:
    """Check that a decision list is consistent (sizes match vocabularies and anchor counts, feeds fit kinds) and
    return the largest number of anchors a group holds. A failure is a bug of the space, hence `ValueError`."""
    if not decisions:
        raise ValueError("the space has an empty decision list")
    group, count, most = None, 0, 0
    for i, d in enumerate(decisions):
        where = f"decision {i} ({d.name!r})"
        if d.group != group:
            group, count = d.group, 0
        if d.kind not in _FEEDS:
            raise ValueError(f"{where}: unknown kind {d.kind!r}")
        if d.feed not in _FEEDS[d.kind] and i < len(decisions) - 1:  # the last decision's feed is never used
            raise ValueError(f"{where}: feed {d.feed!r} does not fit kind {d.kind!r} (use one of {_FEEDS[d.kind]})")
        if d.kind == "op":
            if d.vocab not in vocabs:
                raise ValueError(f"{where}: vocabulary {d.vocab!r} is not among {sorted(vocabs)}")
            if d.size != len(vocabs[d.vocab]) or d.size < 1:
                raise ValueError(f"{where}: size {d.size} differs from vocabulary {d.vocab!r} ({len(vocabs[d.vocab])})")
            if d.fixed_bias is not None and len(d.fixed_bias) != d.size:
                raise ValueError(f"{where}: fixed_bias has {len(d.fixed_bias)} entries for {d.size} ops")
        elif d.kind in ("pointer", "skips"):
            if d.size != count or (d.kind == "pointer" and count < 1):
                raise ValueError(f"{where}: size {d.size} but {count} anchors precede it in group {d.group}")
        if d.zero_anchor and not d.new_anchor:
            raise ValueError(f"{where}: zero_anchor needs new_anchor")
        if d.new_anchor:
            count += 1
            most = max(most, count)
    return most


class Controller(nn.Module):
    """LSTM policy over ``space.decisions()`` (spec section 3).

    Parameters: a stack of bias-free LSTM cells, the start vector ``g_emb`` (1, H), one embedding table (V, H) and one
    softmax matrix (V, H) per op vocabulary (optionally a learnable bias, or logits tied to the embedding), and the
    attention ``W1``, ``W2`` (H, H), ``v`` (H, 1) when the space has pointer or skips decisions.
    """

    def __init__(self, space: Space, cfg: ControllerConfig | None = None):
        super().__init__()
        cfg = cfg if cfg is not None else ControllerConfig()
        cfg.validate()
        self.space, self.cfg = space, cfg
        self.decisions = list(space.decisions())
        vocabs = space.vocabularies()
        max_anchors = check_decisions(self.decisions, vocabs)
        H = cfg.lstm_size

        self.cells = nn.ModuleList(nn.LSTMCell(H, H, bias=False) for _ in range(cfg.lstm_layers))
        self.g_emb = nn.Parameter(torch.empty(1, H))
        used = list(dict.fromkeys(d.vocab for d in self.decisions if d.kind == "op"))
        self.embedding = nn.ParameterDict({v: nn.Parameter(torch.empty(len(vocabs[v]), H)) for v in used})
        self.softmax = nn.ParameterDict(
            {} if cfg.tie_op_embedding else {v: nn.Parameter(torch.empty(len(vocabs[v]), H)) for v in used}
        )
        self.op_bias = nn.ParameterDict()
        if cfg.op_bias_init is not None:
            for v in used:
                if len(cfg.op_bias_init) != len(vocabs[v]):
                    raise ConfigError(
                        f"controller.op_bias_init has {len(cfg.op_bias_init)} values but vocabulary "
                        f"{v!r} has {len(vocabs[v])} ops; give one value per op"
                    )
                self.op_bias[v] = nn.Parameter(torch.empty(len(vocabs[v])))
        self.attention = any(d.kind in ("pointer", "skips") for d in self.decisions)
        if self.attention:
            self.w_attn1 = nn.Linear(H, H, bias=False)  # keys of the anchors
            self.w_attn2 = nn.Linear(H, H, bias=False)  # query of the current step
            self.v_attn = nn.Linear(H, 1, bias=False)
        # Constants, precomputed once (not state: rebuilt from the config and the space).
        prior = torch.arange(max(max_anchors, 1), 0, -1, dtype=torch.float32) ** 2 / 6.0  # (M,): M^2/6 ... 1/6
        self.register_buffer("distance_prior", prior, persistent=False)
        target = torch.tensor([1.0 - cfg.skip_target, cfg.skip_target])
        self.register_buffer("skip_log_target", target.log(), persistent=False)  # (2,)
        self._fixed_bias: dict[int, str] = {}
        for i, d in enumerate(self.decisions):
            if d.kind == "op" and d.fixed_bias is not None:
                self._fixed_bias[i] = f"fixed_bias_{i}"
                self.register_buffer(self._fixed_bias[i], torch.tensor(d.fixed_bias), persistent=False)
        self._needs_key = _anchors_attended(self.decisions)
        c = cfg.tanh_constant
        self._op_tanh = None if c is None else c / cfg.op_tanh_reduce
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform(-init_range, init_range) everywhere (spec 8.1); the op bias takes ``op_bias_init``."""
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-self.cfg.init_range, self.cfg.init_range)
            for b in self.op_bias.values():
                b.copy_(torch.tensor(self.cfg.op_bias_init, dtype=b.dtype))

    # ------------------------------------------------------------------ public API
    def sample(self, greedy: bool = False) -> ControllerSample:
        """Sample one architecture (``greedy``: the most likely choice at every decision, deterministic)."""
        return self._walk(None, greedy)

    def log_prob(self, actions: list[Action]) -> tuple[Tensor, Tensor]:
        """Log-probability and entropy of given actions (teacher forcing along the same path as `sample`)."""
        s = self.score(actions)
        return s.log_prob, s.entropy

    def score(self, actions: list[Action]) -> ControllerSample:
        """Everything `sample` returns, for given actions (teacher forcing); raises `ArchError` on invalid actions."""
        self.check_actions(actions)
        return self._walk(list(actions), False)

    def check_actions(self, actions: list[Action]) -> None:
        """Raise `ArchError` unless ``actions`` is a valid action list for this space's decisions."""
        check_actions(self.decisions, actions)

    # ------------------------------------------------------------------ the walk
    def _shape(self, logits: Tensor, c: float | None) -> Tensor:
        if self.cfg.temperature is not None:
            logits = logits / self.cfg.temperature
        if c is not None:
            logits = c * torch.tanh(logits)
        return logits

    def _attend(self, keys: list[Tensor], h: Tensor) -> Tensor:
        """Attention scores v^T tanh(W1 h_j + W2 h) of the group's anchors: (l,)."""
        k = torch.cat(keys, 0)  # (l, H), W1 h_j cached when each anchor was recorded
        return self.v_attn(torch.tanh(k + self.w_attn2(h))).view(-1)  # (l,)

    def _choose(self, logits: Tensor, given: Action | None, greedy: bool) -> tuple[int, Tensor, Tensor]:
        """Pick one index of a 1-d logit vector; return it with its log-probability and entropy term."""
        logp = F.log_softmax(logits, -1)  # (V,)
        if given is not None:
            a = int(given)
        elif greedy:
            a = int(logp.argmax())
        else:
            a = int(torch.multinomial(logp.exp(), 1))
        lp = logp[a]
        ent = -(logp.exp() * logp).sum() if self.cfg.entropy_mode == "full" else -lp * lp.exp()
        return a, lp, ent

    def _walk(self, given: list[Action] | None, greedy: bool) -> ControllerSample:
        H, cfg = self.cfg.lstm_size, self.cfg
        zeros = self.g_emb.new_zeros(1, H)
        state = [(zeros, zeros) for _ in self.cells]
        x = self.g_emb  # (1, H): the next LSTM input
        anchors: list[Tensor] = []  # values fed back by pointers/skips, each (1, H)
        keys: list[Tensor] = []  # W1 h_j, each (1, H)
        group = None
        actions: list[Action] = []
        log_probs: list[Tensor] = []
        entropies: list[Tensor] = []
        penalties: list[Tensor] = []
        shaped: list[Tensor] = []
        bits_set = bits_total = 0
        last = len(self.decisions) - 1

        for i, d in enumerate(self.decisions):
            if d.group != group:  # a new group (micro: the reduction cell) starts with no anchors; the state carries
                anchors, keys, group = [], [], d.group
            for k, cell in enumerate(self.cells):  # one LSTM step
                state[k] = cell(x, state[k])
                x = state[k][0]
            h = x  # (1, H) output of the top layer
            n = len(anchors)
            feed = self.g_emb
            want = given[len(actions)] if given is not None and d.kind != "anchor" else None

            if d.kind == "op":
                w = self.embedding[d.vocab] if cfg.tie_op_embedding else self.softmax[d.vocab]
                logits = F.linear(h, w).view(-1)  # (V,)
                if d.vocab in self.op_bias:
                    logits = logits + self.op_bias[d.vocab]
                logits = self._shape(logits, self._op_tanh)
                if i in self._fixed_bias:
                    logits = logits + getattr(self, self._fixed_bias[i])
                a, lp, ent = self._choose(logits, want, greedy)
                if d.feed == "embedding":
                    feed = self.embedding[d.vocab][a : a + 1]  # (1, H)
            elif d.kind == "pointer":
                logits = self._shape(self._attend(keys, h), cfg.tanh_constant)  # (l,)
                if d.distance_prior and cfg.distance_prior:  # -(l - j)^2 / 6 favours recent anchors
                    logits = logits - self.distance_prior[-n:]
                a, lp, ent = self._choose(logits, want, greedy)
                if d.feed == "anchor":
                    feed = anchors[a]
                elif d.feed == "anchor_scaled":
                    feed = anchors[a] / (0.1 + (n - a))
            elif d.kind == "skips":
                a, lp, ent, pen, logits, feed = self._skips(keys, anchors, h, want, greedy, d.feed)
                if n > 0:
                    penalties.append(pen)
                    bits_set += sum(a)
                    bits_total += n

            if d.kind != "anchor":  # an anchor step chooses nothing
                actions.append(a)
                shaped.append(logits)
                if lp is not None:  # None for a skips decision over no anchors
                    log_probs.append(lp)
                    entropies.append(ent)
            if d.new_anchor:  # after the attention over the existing anchors
                anchors.append(zeros if d.zero_anchor else h)
                if i in self._needs_key:  # W1 h_j only for anchors that a later pointer or skips decision reads
                    keys.append(self.w_attn1(h))
            if i < last:
                x = feed

        zero = zeros.new_zeros(())
        log_prob = torch.stack(log_probs).sum() if log_probs else zero
        entropy = torch.stack(entropies).sum() if entropies else zero
        penalty = torch.stack(penalties).mean() if penalties else zero
        rate = bits_set / bits_total if bits_total else 0.0
        return ControllerSample(self.space.decode(actions), actions, log_prob, entropy, penalty, rate, shaped)

    def _skips(
        self, keys: list[Tensor], anchors: list[Tensor], h: Tensor, given: Action | None, greedy: bool, feed_kind: str
    ) -> tuple[list[int], Tensor | None, Tensor | None, Tensor | None, Tensor, Tensor]:
        """Independent binary choices over the l anchors: logits [-q_j, q_j] (spec 3.3)."""
        n = len(anchors)
        if n == 0:
            return [], None, None, None, h.new_zeros(0, 2), self.g_emb
        q = self._attend(keys, h)  # (l,)
        logits = self._shape(torch.stack([-q, q], 1), self.cfg.tanh_constant)  # (l, 2)
        logp = F.log_softmax(logits, 1)  # (l, 2)
        if given is not None:
            bits = torch.tensor(given, device=h.device)
        elif greedy:
            bits = (logp[:, 1] > logp[:, 0]).long()
        else:
            bits = torch.bernoulli(logp[:, 1].exp()).long()
        lp_bits = logp.gather(1, bits[:, None]).view(-1)  # (l,)
        if self.cfg.entropy_mode == "full":
            ent = -(logp.exp() * logp).sum()
        else:
            ent = -(lp_bits * lp_bits.exp()).sum()
        # The authors' penalty: element-wise sigmoid of both columns (not a softmax) against [1 - target, target].
        pen = (torch.sigmoid(logits) * (F.logsigmoid(logits) - self.skip_log_target)).sum()
        feed = self.g_emb
        if feed_kind == "skip_mean":
            b = bits.to(h.dtype)[None]  # (1, l)
            feed = (b @ torch.cat(anchors, 0)) / (1.0 + b.sum())  # (1, H)
        return bits.tolist(), lp_bits.sum(), ent, pen, logits, feed


def _anchors_attended(decisions: list[Decision]) -> set[int]:
    """Indices of the decisions whose anchor some later pointer or skips decision of the same group attends to."""
    needed: set[int] = set()
    makers: list[int] = []  # decisions that made the anchors of the current group, in order
    group = None
    for i, d in enumerate(decisions):
        if d.group != group:
            makers, group = [], d.group
        if d.kind in ("pointer", "skips"):
            needed.update(makers[: d.size])
        if d.new_anchor:
            makers.append(i)
    return needed


def check_actions(decisions: list[Decision], actions: list[Action]) -> None:
    """Raise `ArchError` unless ``actions`` holds one valid action per non-anchor decision."""
    choices = [d for d in decisions if d.kind != "anchor"]
    if not isinstance(actions, (list, tuple)) or len(actions) != len(choices):
        got = len(actions) if isinstance(actions, (list, tuple)) else type(actions).__name__
        raise ArchError(f"expected {len(choices)} actions for this space, got {got}")
    for d, a in zip(choices, actions):
        if d.kind == "skips":
            ok = isinstance(a, (list, tuple)) and len(a) == d.size and all(b in (0, 1) for b in a)
            if not ok:
                raise ArchError(f"action for {d.name!r} must be a list of {d.size} bits (0/1), got {a!r}")
        elif isinstance(a, bool) or not isinstance(a, numbers.Integral) or not 0 <= a < d.size:
            raise ArchError(f"action for {d.name!r} must be an integer in [0, {d.size}), got {a!r}")


class UniformSampler(nn.Module):
    """Uniform random architectures with the controller's interface: each op and pointer uniform over its choices,
    each skip bit Bernoulli(0.5). No parameters; log_prob, entropy and skip_penalty are zero. The random-search
    baseline and the "no controller training" ablation. Uses the global torch RNG."""

    def __init__(self, space: Space):
        super().__init__()
        self.space = space
        self.decisions = list(space.decisions())
        check_decisions(self.decisions, space.vocabularies())
        self.register_buffer("_zero", torch.zeros(()), persistent=False)

    def sample(self, greedy: bool = False) -> ControllerSample:
        if greedy:
            raise ValueError("a uniform sampler has no most likely architecture; call sample() without greedy")
        actions: list[Action] = []
        bits_set = bits_total = 0
        for d in self.decisions:
            if d.kind in ("op", "pointer"):
                actions.append(int(torch.randint(d.size, ())))
            elif d.kind == "skips":
                bits = torch.randint(2, (d.size,)).tolist()
                actions.append(bits)
                bits_set, bits_total = bits_set + sum(bits), bits_total + d.size
        rate = bits_set / bits_total if bits_total else 0.0
        z = self._zero
        return ControllerSample(self.space.decode(actions), actions, z, z, z, rate)

    def log_prob(self, actions: list[Action]) -> tuple[Tensor, Tensor]:
        check_actions(self.decisions, actions)
        return self._zero, self._zero


def short_search_settings(controller: ControllerConfig) -> None:
    """Controller settings for searches of 10^2-10^3 samples (the `demo` and `quick` presets), where the paper's
    need 10^4 (docs/fidelity.md, measured on NAS-Bench-Graph's true scores in docs/results.md, "The controller
    alone"). Chosen on two tuning datasets by the best validation accuracy found after 200 and 500 evaluations:

    * PyTorch's Adam epsilon and a baseline started at the first reward: the authors' TF epsilon (1e-3, far above
      the gradient's RMS at these reward scales) makes every step about lr * g / 1e-3 and a baseline starting at 0
      reinforces whatever the first hundred samples were: the policy does not move;
    * Adam lr 0.05, 5 samples per update (the samples per epoch are kept), baseline decay 0.9: ten times the paper's
      updates per sample and a baseline that follows a reward which improves quickly;
    * the 10 best distinct archs so far pulled up by their log-likelihood in every update (elite weight 1);
    * logits shaped alike in every space (tanh constant 1.5, no temperature, no op tanh reduction or op bias, no
      distance prior on pointers), so the settings carry to any space and vocabulary size.
    """
    samples = controller.train_steps * controller.num_aggregate
    controller.num_aggregate = 5
    controller.train_steps = max(1, samples // controller.num_aggregate)
    controller.lr, controller.baseline_decay = 0.05, 0.9
    controller.elite_size, controller.elite_weight = 10, 1.0
    controller.tanh_constant, controller.temperature = 1.5, None
    controller.op_tanh_reduce, controller.op_bias_init = 1.0, None
    controller.adam_eps, controller.adam_tf_eps = 1e-8, False
    controller.baseline_start = "first"
    controller.distance_prior = False
