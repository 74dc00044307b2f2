"""Analyses of trajectories: pure functions of arrays."""
