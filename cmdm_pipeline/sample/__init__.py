"""The seeded sample-data generators: the bundled five overlapping sources (``generator``, run as
``python -m cmdm_pipeline.sample``: the files and command line, over ``common``, ``noise``, ``identifiers``,
``world``, ``sources`` and ``defects``), their consent events (``consent``) and erasure requests (``erasure``),
and a civil person registry (``registry``)."""
