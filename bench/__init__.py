"""Tagwarden benchmark suite: the gateway measured side by side with the bare registry.

`python -m bench` (== `make bench`) starts its own Redis, registry, gateway (under gunicorn with
the repository's gunicorn.conf.py) and RQ worker, runs every benchmark of issue 9 in rounds that
alternate direct/gateway order, writes bench/results.json and prints a table.

Modules, one per benchmark family:
  blobs       blob pull (single stream, 16 streams), chunked blob push, gateway RSS
  manifests   manifest GET/HEAD p95 under 50 clients, manifest PUT p95, policy evaluation
  promotions  promotions per second vs registry GET+PUT manifest pairs per second
  history     history page latency with 1,000,000 records vs 100
  webhooks    webhook ingest rate with duplicates, push → recorded event delay
  scans       scan of a ~500 MiB 5-layer image vs download + decompress (when the scanner exists)
Support: stack (the processes), client (a lean raw-socket HTTP client), load + tasks
(closed-loop load in separate processes), harness (paired rounds, CPU accounting), images
(small OCI images), config (full / --quick sizes), stats, report (table, results.json),
profile (py-spy, --profile).
"""
