"""Tenants and model versions in the database: schema, sessions, lifecycle service, audit chain and checkpoints, tenant settings, quota, breaker.
May import integrity, observability, stats and the shared modules.
"""
