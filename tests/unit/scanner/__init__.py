"""Unit tests of the scanner engine (service/scanner, service/store/vulndb.py)."""
