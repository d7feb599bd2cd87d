"""The default request body limits, apart from the middleware that enforces them (starlette) so that the settings,
which every process reads, can name them without loading the web stack."""

MIB = 1024 * 1024
DEFAULT_MAX_PREDICT_BYTES = 1 * MIB
"""1,000 instances of ten features (the most one request takes) are about 0.3 MiB of JSON."""
DEFAULT_MAX_INGEST_BYTES = 16 * MIB
"""5,000 signed learning events (the most one request takes) of ten features are about 2.6 MiB of JSON."""
