"""Deciding, with no I/O: the instance graph, the planner (incremental, and from scratch
as its reference), fitting work into nodes, lifecycles as tables, preflight checks."""
