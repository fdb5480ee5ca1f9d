"""Models pruneops never saw, written as a team would: used to test ingestion and round trips."""
