"""Shadow and canary looks: outcomes paired with predictions and fed to the sequential guard (the statistics live in stats).
May import data, observability, contracts, stats and the shared modules.
"""
