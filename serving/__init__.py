"""pruneops serving (built by a later issue)."""
