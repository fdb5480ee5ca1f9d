"""Model architectures pruneops ships: importable by path, torch-only, for tasks and benchmarks."""
