"""`python -m bench [--quick] [--only NAME ...] [--rounds N] [--profile]`: run the benchmarks,
write bench/results.json, print the table."""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import blobs, history, load, manifests, promotions, report, scans, webhooks  # noqa: E402
from bench import retention as retention_bench  # noqa: E402
from bench import stack as stack_mod  # noqa: E402
from bench.config import Config, make  # noqa: E402
from bench.report import Row  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results.json"

# name → (family, title for --list, needs the stack, runner)
BENCHMARKS: list[tuple[str, str, Callable[..., Row]]] = [
    ("policy_eval", "manifests", lambda s, c, ctx: manifests.policy_eval(c)),
    ("regex_worst_case", "manifests", lambda s, c, ctx: manifests.regex_worst_case(c)),
    ("manifest_get_head", "manifests", lambda s, c, ctx: manifests.get_head(s, c)),
    ("manifest_put", "manifests", lambda s, c, ctx: manifests.put(s, c)),
    ("promotions", "promotions", lambda s, c, ctx: promotions.run(s, c)),
    ("webhook_ingest", "webhooks", lambda s, c, ctx: webhooks.ingest(s, c)),
    ("webhook_e2e", "webhooks", lambda s, c, ctx: webhooks.end_to_end(s, c)),
    ("blob_pull_single", "blobs", lambda s, c, ctx: blobs.pull_single(s, c, ctx["blobs"])),
    ("blob_pull_concurrent", "blobs",
     lambda s, c, ctx: blobs.pull_concurrent(s, c, ctx["blobs"])),
    ("blob_pull_single_front", "blobs",
     lambda s, c, ctx: blobs.pull_single(s, c, ctx["blobs"], via="front")),
    ("blob_pull_concurrent_front", "blobs",
     lambda s, c, ctx: blobs.pull_concurrent(s, c, ctx["blobs"], via="front")),
    ("blob_push", "blobs", lambda s, c, ctx: blobs.push(s, c)),
    ("gateway_rss", "blobs", lambda s, c, ctx: blobs.rss(s, c, ctx["blobs"])),
    ("history", "history", lambda s, c, ctx: history.run(s, c)),
    ("scan", "scans", lambda s, c, ctx: scans.run(s, c)),
    ("retention", "retention", lambda s, c, ctx: retention_bench.run(s, c)),
]
ORDER = [name for name, _, _ in BENCHMARKS]
TITLES = {
    "policy_eval": ("policy evaluation alone (evaluate_push), p95", "—", "< 2 ms (issue 3)"),
    "regex_worst_case": ("grammar and policy-regex worst case (hostile inputs)", "—",
                         "< 1 ms"),
    "manifest_get_head": ("manifest GET/HEAD p95, 50 concurrent clients", "direct registry",
                          "≤ 1.0× direct (issue 20)"),
    "manifest_put": ("manifest PUT with policy evaluation p95", "direct registry PUT",
                     "+ ≤ 5 ms"),
    "promotions": ("promotions per second, 16 concurrent CI clients",
                   "registry GET+PUT manifest pairs/s", "≥ 0.5 of the pair rate"),
    "webhook_ingest": ("webhook ingest", "—", "≥ 3,000 events/s, deduplicated (issue 20)"),
    "webhook_e2e": ("push → event listed", "—", "— (reported)"),
    "blob_pull_single": ("blob pull, 512 MiB, single stream", "direct registry",
                         "≥ 0.95 of direct"),
    "blob_pull_concurrent": ("blob pull, 16 concurrent streams of 64 MiB", "direct registry",
                             "≥ 0.95 of direct (issue 20)"),
    "blob_pull_single_front": ("blob pull, 512 MiB, single stream, front-proxy deployment",
                               "direct registry", "≥ 0.95 of direct"),
    "blob_pull_concurrent_front": ("blob pull, 16 × 64 MiB, front-proxy deployment",
                                   "direct registry", "≥ 0.90 of direct"),
    "blob_push": ("blob push (chunked PATCH + PUT), 512 MiB", "direct registry",
                  "≥ 0.90 of direct"),
    "gateway_rss": ("gateway peak RSS while 1 GiB streams through", "before the transfer",
                    "grows < 64 MiB"),
    "history": ("history page (50 records) p95 with 1,000,000 records", "with 100 records",
                "≤ 1.2×"),
    "scan": ("scan of a ~500 MiB, 5-layer image", "download + decompress the layers only",
             "≤ 1.5× that time, worker RSS < 256 MiB"),
    "retention": ("retention selection, repository with 10,000 tags (+2,000 untagged digests)",
                  "—", "— (reported)"),
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes, 3 rounds, shorter phases (a few minutes)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only these benchmarks or families (repeatable, or "
                             "comma-separated): " + ", ".join(n for n, _, _ in BENCHMARKS)
                             + "; families: blobs, manifests, promotions, history, webhooks, "
                               "scans, retention")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds per benchmark (default 5, --quick 3)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the gateway during the first gateway phase of each "
                             "benchmark (bench/profiles/); numbers of such a run are not "
                             "for quoting")
    parser.add_argument("--workers", type=int, default=None,
                        help="gunicorn workers (default: gunicorn.conf.py's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="gunicorn threads per worker (default: gunicorn.conf.py's)")
    parser.add_argument("--output", type=Path, default=RESULTS, help="results file")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the services keep their data (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the workdir afterwards")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--table", action="store_true",
                        help="print the table of the results file (no run) and exit")
    return parser.parse_args(argv)


def selected(only: list[str]) -> list[tuple[str, str, Callable[..., Row]]]:
    if not only:
        return BENCHMARKS
    wanted = {w.strip() for item in only for w in item.split(",") if w.strip()}
    known = {n for n, _, _ in BENCHMARKS} | {f for _, f, _ in BENCHMARKS}
    unknown = wanted - known
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(sorted(unknown))}; known: "
                         f"{', '.join(sorted(known))}")
    return [b for b in BENCHMARKS if b[0] in wanted or b[1] in wanted]


def failed_row(name: str, error: str, status: str = "failed") -> Row:
    title, against, target = TITLES.get(name, (name, "—", "—"))
    row = Row(name, title, against, "", target, status=status, headline=error[:120])
    row.notes.append(error)
    return row


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name, family, _ in BENCHMARKS:
            print(f"{name:22} ({family}) {TITLES[name][0]}")
        return 0
    if args.table:
        import json

        saved = json.loads(args.output.read_text())
        report.print_table([Row(**r) for r in saved["results"]])
        return 0
    cfg: Config = make(args.quick, args.rounds, args.profile)
    if cfg.profile:
        from bench.profile import py_spy

        if py_spy() is None:
            print("--profile needs py-spy: .venv/bin/pip install py-spy (profiling skipped)")
    chosen = selected(args.only)
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    rows: list[Row] = []
    print(f"tagwarden bench: {'quick' if cfg.quick else 'full'} run, {cfg.rounds} rounds, "
          f"{len(chosen)} benchmarks", flush=True)
    stack = stack_mod.start(args.workdir, workers=args.workers, threads=args.threads,
                            keep=args.keep)
    conf = stack_mod.gunicorn_conf()
    print(f"  bare registry 127.0.0.1:{stack.reg_port}; gateway 127.0.0.1:{stack.gw_port} "
          f"({conf.get('worker_class')}, {stack.workers} workers × {stack.threads} threads) "
          f"→ registry 127.0.0.1:{stack.registry.port} (same storage, notifying the gateway); "
          f"redis 127.0.0.1:{stack.redis_proc.port}; RQ worker; data in {stack.workdir}",
          flush=True)
    ctx = {"blobs": blobs.Blobs(stack, cfg)}
    try:
        for name, _family, runner in chosen:
            t0 = time.monotonic()
            print(f"\n== {name}", flush=True)
            try:
                stack.settle()
                row = runner(stack, cfg, ctx)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - one broken benchmark must not stop the rest
                traceback.print_exc()
                row = failed_row(name, f"{type(exc).__name__}: {exc}")
            row.detail["elapsed_s"] = round(time.monotonic() - t0, 1)
            rows.append(row)
            print(f"   {row.headline}  (target {row.target}: {report.met_text(row)}; "
                  f"{row.detail['elapsed_s']} s)", flush=True)
            report.write_json(args.output, rows, _meta(cfg, stack, started, args),
                              merge=bool(args.only), order=ORDER)
    finally:
        load.shutdown()
        stack.stop()
    elapsed = time.monotonic() - started
    report.write_json(args.output, rows, _meta(cfg, stack, started, args), merge=bool(args.only),
                      order=ORDER)
    print(f"\nTagwarden gateway vs bare registry ({'quick' if cfg.quick else 'full'} run, "
          f"{cfg.rounds} rounds, {elapsed / 60:.1f} min); results in {args.output}\n")
    report.print_table(rows)
    return 0


def _meta(cfg: Config, stack: Any, started: float, args: argparse.Namespace) -> dict[str, Any]:
    from dataclasses import asdict

    return {"config": asdict(cfg), "elapsed_s": round(time.monotonic() - started, 1),
            "gunicorn": {**stack_mod.gunicorn_conf(), "workers": stack.workers,
                         "threads": stack.threads},
            "env_overrides": stack_mod.BENCH_ENV, "only": args.only}


if __name__ == "__main__":
    sys.exit(main())
