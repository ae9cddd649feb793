"""Shared helpers for the Tagwarden test suites."""
