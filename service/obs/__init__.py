"""Observability: JSON logs, Prometheus metrics and their multiprocess setup."""
