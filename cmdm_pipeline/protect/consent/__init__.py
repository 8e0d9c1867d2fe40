"""Consent per purpose and channel: reading and validating consent events (``events``) and keeping each subject's current consent and its history (``update``)."""
