"""The ``streams`` console script (README, Operating it): one module per command family, each
command's rendering beside its computation. Settings come from the environment."""

from streams.cli import audit, dev, grant, lab, ops, pipeline
from streams.cli.base import main

__all__ = ["audit", "dev", "grant", "lab", "main", "ops", "pipeline"]
