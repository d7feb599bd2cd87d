"""Tenants and model versions in the database: schema, sessions and migrations (package data), the lifecycle service,
audit chain and checkpoints, tenant settings, quota, circuit breaker, and the OpenLineage events of seals, trainings
and promotions, recorded in the outbox in the transaction of their fact (lineage_events, lineage_outbox). May import integrity, observability, stats and
the shared modules at the top of evolution/.
"""
