"""pruneops components (built by a later issue)."""
