"""Shadow and canary looks, and the post-promotion watch: outcomes paired with predictions and fed to the sequential
guard or its harm test (the statistics live in stats). May import data, notifications, registry, observability,
contracts, stats and the shared modules.
"""
