"""The Registry v2 proxy, split by resource as distribution splits its handlers."""
