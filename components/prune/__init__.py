"""The prune step as a KFP component (see README.md beside this file)."""
