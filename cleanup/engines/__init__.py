"""Choosing the engine that computes a plan (:class:`cleanup.engine.PlanEngine`).

``duckdb`` (the default) is :class:`cleanup.engine.Engine`, embedded and out of
core. ``spark`` is :class:`cleanup.engines.spark.SparkEngine`, which needs the
optional extra ``cleanup[spark]`` (pyspark and a Java runtime) and is imported
only when asked for. Both take the same :class:`cleanup.engine.EngineInput` and
give the same :class:`cleanup.engine.EngineResult` and a byte-identical manifest;
the invariant checks, signing and the bundle stay in the planner.
"""

from __future__ import annotations

from cleanup.engine import Engine, EngineInput, PlanEngine
from cleanup.errors import UsageError

ENGINES = ("duckdb", "spark")


def open_engine(inp: EngineInput) -> PlanEngine:
    """The engine ``inp.engine`` names, ready for :meth:`PlanEngine.compute`."""
    if inp.engine == "duckdb":
        return Engine(inp)
    if inp.engine == "spark":
        from cleanup.engines.spark import SparkEngine

        return SparkEngine(inp)
    raise UsageError(f"unknown engine {inp.engine!r}", hint=f"use one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "open_engine"]
