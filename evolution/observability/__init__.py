"""What operators watch: Prometheus metrics, OpenTelemetry spans, JSON logs, and the result type of the doctor's checks.
May import contracts and the shared modules only: every other room reports through it.
"""
