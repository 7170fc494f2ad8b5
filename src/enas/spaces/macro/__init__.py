"""The macro CNN space (spec 2.2): arch codec, decisions, layers, supernet, child, presets."""
