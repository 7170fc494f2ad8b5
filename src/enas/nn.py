"""Choices inside an ordinary PyTorch module: write a supernet as a plain `nn.Module`, mark the places the search
decides, and `choice_space` turns it into a registered search space (`enas.registry`).

    class Net(nn.Module):
        def __init__(self, cfg, info):
            super().__init__()
            self.conv = OpChoice({"conv3x3": nn.Conv2d(16, 16, 3, padding=1), "maxpool": nn.MaxPool2d(3, 1, 1)})
            self.skip = InputChoice(2, n_chosen=None)   # any subset of two earlier tensors
            self.width = ValueChoice([32, 64])          # read as self.width.value in forward

    SPACE = choice_space("mynet", "images", Net, presets)

The modules live in `enas.spaces.choices.modules`, the space they make in `enas.spaces.choices.space`, the picture
of a chosen path in `enas.spaces.choices.draw`; this module is their public face.
"""

from enas.spaces.choices.modules import ChoiceArch, ChoiceNet, InputChoice, OpChoice, ValueChoice
from enas.spaces.choices.space import ChoiceSpace, choice_space

__all__ = ["ChoiceArch", "ChoiceNet", "ChoiceSpace", "InputChoice", "OpChoice", "ValueChoice", "choice_space"]
