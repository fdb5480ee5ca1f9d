"""pruneops monitoring (built by a later issue)."""
