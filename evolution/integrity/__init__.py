"""Integrity of what is stored: artifact stores (filesystem, S3), signers (local key, KMS) and key
rotation, manifests and their OpenSSF model signatures, Merkle trees, object keys.
May import observability and the shared modules.
"""
