"""Test-only helpers (the Harbor double); tooling the benchmarks share is in testkit/."""
