"""The seeded sample-data generators: the bundled five overlapping sources (``generator``, run as
``python -m cmdm_pipeline.sample``), their consent events (``consent``) and erasure requests (``erasure``),
and a civil person registry (``registry``)."""
