"""Controlled Evolution: the domain, its ports and their adapters. Never imports Temporal."""

__version__ = "0.1.0"
