"""The plain reference networks `enas bench` times beside the supernets: a tied 2-layer ``nn.LSTM`` language
model (recurrent space), the plain CNN of the speed targets and a lighter 4-conv CNN (micro space)."""

from __future__ import annotations

import torch
from torch import nn


class LSTMLanguageModel(nn.Module):
    """The recurrent reference: embedding -> 2-layer nn.LSTM -> tied decoder."""

    def __init__(self, vocab: int, hidden: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.lstm = nn.LSTM(hidden, hidden, num_layers=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (T, B) -> (T, B, V)
        out, _ = self.lstm(self.embedding(x))
        return out @ self.embedding.weight.t()

    def uncounted_flops(self, tokens: int) -> float:
        """Forward FLOPs of the fused LSTM kernel, which torch's FLOP counter does not see: per layer and token,
        the four gates' products with the input and the previous state, 2 * 4H * (H_in + H)."""
        h = self.lstm.hidden_size
        return float(self.lstm.num_layers * tokens * 2 * 4 * h * (self.lstm.input_size + h))


def _cbr(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class PlainCNN(nn.Module):
    """The micro reference of the speed targets: conv3x3 3->32->64, maxpool, ->128, maxpool, ->256 (BN + ReLU after
    each conv), global pooling, linear."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(*_cbr(in_channels, 32), *_cbr(32, 64), nn.MaxPool2d(2), *_cbr(64, 128),
                                  nn.MaxPool2d(2), *_cbr(128, 256))
        self.fc = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


class FourConvCNN(nn.Module):
    """An extra, lighter reference: conv-BN-ReLU at 32, 64, 128, 256 channels, stride 2 from the second conv."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        widths, layers, c = (32, 64, 128, 256), [], in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, 1 if i == 0 else 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU()]
            c = w
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


__all__ = ["FourConvCNN", "LSTMLanguageModel", "PlainCNN"]
