"""The demo: deterministic synthetic agronomic data with drift injected at a known time, and the scenario that drives the system.
May import serving, data and the shared modules.
"""
