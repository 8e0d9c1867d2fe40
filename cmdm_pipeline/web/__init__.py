"""The steward workbench and the resolve API: one web application (``cmdm serve``) that reads the snapshot
each run publishes and owns its decision store, never the warehouse."""
