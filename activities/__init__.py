"""Temporal activities: thin methods on classes holding injected services; the only side effects of workflows."""
