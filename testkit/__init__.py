"""Tooling shared by the test suites and the benchmarks (issue 16): real processes (`procs`:
redis-server, docker-registry, gunicorn, nginx, sentinels), OCI images and skopeo (`oci`), and
the scan fixtures whose result is known exactly (`scan_fixtures`). Never imported by service/
or workers/, and not part of the installed package."""
