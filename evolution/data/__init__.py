"""Learning data: event ingestion and its sources, immutable Merkle-hashed snapshots, outcomes joined to predictions.
May import registry, integrity, observability and the shared modules at the top of evolution/.
"""
