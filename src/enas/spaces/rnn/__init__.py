"""The recurrent-cell space (spec 2.1, 3.2): arch codec, decisions, cell, supernet, child, presets."""
