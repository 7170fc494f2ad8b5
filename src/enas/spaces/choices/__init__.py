"""Spaces written as ordinary PyTorch modules with choices (`enas.nn`)."""
