"""Helpers for testing fanlog and code that uses it: readers of what trackers stored.

Nothing in the library imports this package. :mod:`fanlog.testing.wandb` reads an offline
W&B run's transaction log (needs ``wandb``).
"""
