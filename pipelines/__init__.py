"""pruneops pipelines (built by a later issue)."""
