"""Predictions over HTTP: the champion cached in memory, shadow and canary routing, bearer-token authentication, outage buffering.
May import governance, training, data, registry, observability and the shared modules.
"""
