"""Unit tests of the scanner engine (workers/scanner, service/store/vulndb.py)."""
