"""Tenants and model versions in the database: schema, sessions and migrations (package data), the lifecycle service,
audit chain and checkpoints, tenant settings, quota, circuit breaker. May import integrity, observability, stats and
the shared modules at the top of evolution/.
"""
