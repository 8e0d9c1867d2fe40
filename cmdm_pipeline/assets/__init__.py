"""Thin Dagster wrappers around the stages; one module per stage, named as in ``stages/``."""
