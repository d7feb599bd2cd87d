"""Drift detection: the scheduled scan of a sealed window, its signed reports, and the baselines it compares against.
May import training, data, notifications, registry, integrity, observability, contracts, stats and the shared modules.
"""
