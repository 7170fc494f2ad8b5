"""The controller alone, on ground truth: a search that takes any reward function instead of a supernet
(`enas.oracle.loop.run`), regularized evolution as the reference optimizer (`enas.oracle.evolution`), and
NAS-Bench-Graph's table of true scores as a space (`enas.oracle.nasbench_graph`). `benchmarks/oracle.py` runs
them; docs/results.md has the table."""

from enas.oracle.evolution import RegularizedEvolution, mutate, random_actions
from enas.oracle.loop import POLICIES, OracleResult, run

__all__ = ["POLICIES", "OracleResult", "RegularizedEvolution", "mutate", "random_actions", "run"]
