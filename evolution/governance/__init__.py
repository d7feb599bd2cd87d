"""Who may do what and what it is worth: dashboard users and API tokens, retention and garbage collection, economics and SLOs.
May import drift, registry, integrity, observability, contracts and the shared modules.
"""
