"""Quality: the schema's rules as a Great Expectations suite, the quality report, Data Docs and check verdicts.

Pure functions (no Dagster); ``cmdm_pipeline.assets.quality`` wraps them. Great Expectations
is imported only inside the functions that run it: the import alone takes seconds.
"""
