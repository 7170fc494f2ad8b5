"""The micro (cell) CNN space (spec 2.3): arch codec, decisions, cells, supernet, child, presets."""
