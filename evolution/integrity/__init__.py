"""Integrity of what is stored: artifact stores (filesystem, S3), signers (local key, KMS), manifests, Merkle trees, object keys.
May import observability and the shared modules.
"""
