"""Process entry points: the Temporal worker and the serving process; the one place things are wired."""
