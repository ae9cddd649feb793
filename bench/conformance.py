"""`make conformance`: the OCI distribution-spec conformance suite (v1.1.1), through the
gateway and against the bare registry behind it, side by side.

The suite is a compiled Go test binary (`OCI_CONFORMANCE_BIN`), a dev tool and not part of the
project, so it stays out of `make test`. A stack of its own is started (bench.stack: Redis, the
registry notifying the gateway, the gateway, a worker, and a bare registry on the same storage
without notifications), then the four workflows (pull, push, content discovery, content
management) run in these configurations, each in a namespace of its own:

- the gateway with the bootstrap admin token, twice (default policy);
- the gateway with `OCI_AUTOMATIC_CROSSMOUNT=0`, and `=1` against a second gateway that has
  `TAGWARDEN_AUTOMATIC_MOUNT=true` (the suite expects the one or the other);
- the gateway with a `ci` token scoped to the suite's two repositories (the cross-mount source
  is one it may read);
- the bare registry the same ways (no token).

Prints a table per run and workflow, every failure, and exits 1 when a gateway run failed.
`CONFORMANCE_REPORTS` keeps each run's reports (default: a temporary folder).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import requests

from bench import stack as bench_stack
from testkit import procs

WORKFLOWS = ("Pull", "Push", "Content Discovery", "Content Management")


def run_suite(binary: str, url: str, namespace: str, reports: Path, user: str = "",
              password: str = "", **extra: str) -> dict:
    """One run of every workflow: {"rows": {workflow: {passed, failed, skipped}}, "failed"}."""
    reports.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OCI_ROOT_URL": url, "OCI_NAMESPACE": namespace,
           "OCI_CROSSMOUNT_NAMESPACE": f"{namespace}-mount", "OCI_USERNAME": user,
           "OCI_PASSWORD": password, "OCI_TEST_PULL": "1", "OCI_TEST_PUSH": "1",
           "OCI_TEST_CONTENT_DISCOVERY": "1", "OCI_TEST_CONTENT_MANAGEMENT": "1",
           "OCI_HIDE_SKIPPED_WORKFLOWS": "0", "OCI_DEBUG": "0",
           "OCI_REPORT_DIR": str(reports), **extra}
    if "OCI_AUTOMATIC_CROSSMOUNT" not in extra:
        env.pop("OCI_AUTOMATIC_CROSSMOUNT", None)
    with (reports / "output.log").open("wb") as log:
        subprocess.run([binary, "-test.v", "-ginkgo.no-color",
                        f"-ginkgo.json-report={reports / 'report.json'}"],
                       cwd=reports, env=env, stdout=log, stderr=subprocess.STDOUT, check=False,
                       timeout=900)
    return summarize(reports / "report.json")


def summarize(report: Path) -> dict:
    """Per-workflow counts and the failed specs of a ginkgo JSON report."""
    rows = {w: {"passed": 0, "failed": 0, "skipped": 0} for w in WORKFLOWS}
    failed: list[str] = []
    if not report.exists():
        return {"rows": rows, "failed": ["no report (see output.log)"]}
    for suite in json.loads(report.read_text()):
        for spec in suite.get("SpecReports") or []:
            hierarchy = spec.get("ContainerHierarchyTexts") or []
            name = " ".join([*hierarchy[1:], spec.get("LeafNodeText", "")])
            state = spec.get("State")
            if spec.get("LeafNodeType") != "It":
                if state not in ("passed", "skipped"):
                    failed.append(f"{spec.get('LeafNodeType')}: {state}")
                continue
            key = {"passed": "passed", "skipped": "skipped", "pending": "skipped"}.get(
                state, "failed")
            rows.setdefault(hierarchy[1] if len(hierarchy) > 1 else "?",
                            {"passed": 0, "failed": 0, "skipped": 0})[key] += 1
            if key == "failed":
                message = " ".join(((spec.get("Failure") or {}).get("Message") or "").split())
                failed.append(f"{name}: {message[:300]}")
    return {"rows": rows, "failed": failed}


def scoped_token(api_url: str, repositories: list[str]) -> str:
    """A ci token covering only `repositories`."""
    resp = requests.post(f"{api_url}/api/v1/tokens", timeout=10,
                         headers={"Authorization": f"Bearer {procs.ADMIN_TOKEN}"},
                         json={"name": f"conformance-{uuid.uuid4().hex[:6]}", "role": "ci",
                               "repositories": repositories})
    resp.raise_for_status()
    return resp.json()["token"]


def table(results: dict[str, dict]) -> str:
    """One line per run and workflow, then totals."""
    lines = [f"{'run':<28}{'workflow':<20}{'passed':>7}{'failed':>7}{'skipped':>8}"]
    for run, result in results.items():
        total = {"passed": 0, "failed": 0, "skipped": 0}
        for workflow, row in result["rows"].items():
            lines.append(f"{run:<28}{workflow:<20}{row['passed']:>7}{row['failed']:>7}"
                         f"{row['skipped']:>8}")
            total = {k: total[k] + row[k] for k in total}
        lines.append(f"{run:<28}{'total':<20}{total['passed']:>7}{total['failed']:>7}"
                     f"{total['skipped']:>8}")
    return "\n".join(lines)


def main() -> int:
    """Start a stack, run the suite in every configuration, print the comparison."""
    binary = os.environ.get("OCI_CONFORMANCE_BIN")
    if not binary or not os.access(binary, os.X_OK):
        print("make conformance: set OCI_CONFORMANCE_BIN to the conformance test binary",
              file=sys.stderr)
        return 2
    reports = Path(os.environ.get("CONFORMANCE_REPORTS") or tempfile.mkdtemp(
        prefix="tagwarden-conformance-"))
    stack = bench_stack.start()
    automount = procs.gateway_server(stack.workdir / "gateway-automount",
                                     {**stack.env, "TAGWARDEN_AUTOMATIC_MOUNT": "true"})
    try:
        gw = f"http://127.0.0.1:{stack.gw_port}"
        gw_auto = f"http://127.0.0.1:{automount.port}"
        bare = f"http://127.0.0.1:{stack.reg_port}"
        admin = ("ci", procs.ADMIN_TOKEN)
        scoped = ("ci", scoped_token(gw, ["conformance/scoped", "conformance/scoped-mount"]))
        runs = {
            "gateway #1": (gw, "conformance/gw1", admin, {}),
            "gateway #2": (gw, "conformance/gw2", admin, {}),
            "gateway crossmount=0": (gw, "conformance/gwx0", admin,
                                     {"OCI_AUTOMATIC_CROSSMOUNT": "0"}),
            "gateway crossmount=1": (gw_auto, "conformance/gwx1", admin,
                                     {"OCI_AUTOMATIC_CROSSMOUNT": "1"}),
            "gateway scoped ci token": (gw, "conformance/scoped", scoped, {}),
            "bare #1": (bare, "conformance/bare1", ("", ""), {}),
            "bare #2": (bare, "conformance/bare2", ("", ""), {}),
            "bare crossmount=0": (bare, "conformance/barex0", ("", ""),
                                  {"OCI_AUTOMATIC_CROSSMOUNT": "0"}),
            "bare crossmount=1": (bare, "conformance/barex1", ("", ""),
                                  {"OCI_AUTOMATIC_CROSSMOUNT": "1"}),
        }
        results = {}
        for name, (url, namespace, (user, password), extra) in runs.items():
            folder = reports / name.replace(" ", "-").replace("#", "").replace("=", "")
            results[name] = run_suite(binary, url, namespace, folder, user, password, **extra)
            print(f"{name}: {sum(r['failed'] for r in results[name]['rows'].values())} failed",
                  flush=True)
    finally:
        automount.stop()
        stack.stop()
    print(table(results))
    for name, result in results.items():
        for failure in result["failed"]:
            print(f"FAILED [{name}] {failure}")
    print(f"reports: {reports}")
    return 1 if any(r["failed"] for n, r in results.items() if n.startswith("gateway")) else 0


if __name__ == "__main__":
    sys.exit(main())
