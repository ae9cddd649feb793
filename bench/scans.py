"""Scan of a ~500 MiB, 5-layer gzip image by the real RQ worker, against the floor any scan
needs: downloading and gunzipping the same layers (in this process, 1 MiB reads, output
discarded). Also the scanning process's peak RSS.

Runs only when the scanner exists (workers/scan.py with `run_scan`, and the scans API);
otherwise the row says "not yet available"."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from bench.client import MIB, Http, put_small_blob, upload
from bench.config import Config
from bench.harness import CpuMeter
from bench.report import Row
from bench.stack import BenchStack, tree
from bench.stats import summary

REPO = "scanbench/big"
POLICY = {"name": "scanbench", "repositories": ["scanbench/*"], "scan_on_push": False}
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


def available() -> str | None:
    """None when the scanner can be benchmarked, else why not (the scan job's entry point and
    the scans API must import: a layout change that moves them fails here, loudly, instead of
    leaving the row empty)."""
    for module, attribute in (("workers.scan", "run_scan"), ("service.http.api.scans", "blp")):
        try:
            found = importlib.import_module(module)
        except ImportError as exc:
            return f"{module} cannot be imported ({exc})"
        if not hasattr(found, attribute):
            return f"{module} has no {attribute}"
    return None


# -- the image ------------------------------------------------------------------------------
def _layer_file(workdir: Path, index: int, target: int) -> dict[str, Any]:
    """A gzip tar layer of about `target` compressed bytes, written to disk: files of hex text
    (compresses to ~55 %, like binaries and libraries do); the first layer also carries a
    Debian os-release and dpkg status so the scanner has packages to match."""
    from testkit import scan_fixtures as fixtures

    path = workdir / f"layer-{index}.tar.gz"
    raw_hash = hashlib.sha256()

    class Hashing(io.RawIOBase):
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def writable(self) -> bool:
            return True

        def write(self, b: Any) -> int:
            raw_hash.update(b)
            return self.inner.write(b)

    file_size = 4 * MIB
    count = max(1, int(target / 0.55) // file_size)
    with open(path, "wb") as out:
        gz = gzip.GzipFile(fileobj=out, mode="wb", compresslevel=1, mtime=0)
        hashing = Hashing(gz)
        with tarfile.open(fileobj=hashing, mode="w|", format=tarfile.PAX_FORMAT) as tf:
            def add(name: str, data: bytes) -> None:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))

            if index == 0:
                add("usr/lib/os-release", fixtures.DEBIAN_OS_RELEASE.encode())
                add("etc/os-release", fixtures.DEBIAN_OS_RELEASE.encode())
                add("var/lib/dpkg/status", fixtures.DPKG_STATUS.encode())
            for i in range(count):
                add(f"opt/bench/layer{index}/blob-{i:04d}.bin",
                    os.urandom(file_size // 2).hex().encode())
        gz.close()
    data_hash = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MIB):
            data_hash.update(chunk)
    return {"path": path, "digest": "sha256:" + data_hash.hexdigest(),
            "diff_id": "sha256:" + raw_hash.hexdigest(), "size": path.stat().st_size}


def _push_file(http_: Http, layer: dict[str, Any]) -> None:
    def pieces() -> Iterator[bytes]:
        with open(layer["path"], "rb") as f:
            while chunk := f.read(MIB):
                yield chunk

    upload(http_, REPO, pieces(), layer["digest"])


def build_and_push(stack: BenchStack, cfg: Config) -> dict[str, Any]:
    workdir = stack.workdir / "scan-image"
    workdir.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    layers = [_layer_file(workdir, i, cfg.scan_size // cfg.scan_layers)
              for i in range(cfg.scan_layers)]
    built = time.perf_counter() - t0
    config = json.dumps({
        "created": "1970-01-01T00:00:00Z", "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [la["diff_id"] for la in layers]},
    }, separators=(",", ":")).encode()
    http_ = stack.v2("direct")
    config_digest = put_small_blob(http_, REPO, config)
    for layer in layers:
        _push_file(http_, layer)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": la["digest"], "size": la["size"]}
                   for la in layers],
    }, separators=(",", ":")).encode()
    status, headers, body = http_.request("PUT", f"/v2/{REPO}/manifests/v1.0.0", manifest,
                                          {"Content-Type": OCI_MANIFEST})
    http_.close()
    if status != 201:
        raise RuntimeError(f"manifest PUT answered {status}: {body[:200]!r}")
    for layer in layers:
        layer["path"].unlink()
    return {"digest": headers["Docker-Content-Digest"], "layers": layers,
            "compressed": sum(la["size"] for la in layers), "build_s": round(built, 1)}


def import_vulndb(stack: BenchStack) -> None:
    from testkit import scan_fixtures as fixtures

    directory = fixtures.write_osv_dir(stack.workdir / "osv", fixtures.osv_fixture_records())
    tagwarden = str(Path(sys.executable).parent / "tagwarden")
    env = {**stack.env, "TAGWARDEN_URL": f"http://127.0.0.1:{stack.gw_port}",
           "TAGWARDEN_TOKEN": stack.env["TAGWARDEN_ADMIN_TOKEN"]}
    done = subprocess.run([tagwarden, "vulndb", "import", str(directory)], env=env,
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"vulndb import failed: {done.stderr[-500:]}")


# -- the two measurements -------------------------------------------------------------------
def download_decompress(stack: BenchStack, layers: list[dict[str, Any]]) -> tuple[float, int]:
    """Seconds to GET every layer from the registry and gunzip it (output discarded)."""
    http_ = stack.v2("direct")
    out = 0
    t0 = time.perf_counter()
    for layer in layers:
        d = zlib.decompressobj(wbits=31)
        for piece in http_.iter_get(f"/v2/{REPO}/blobs/{layer['digest']}"):
            out += len(d.decompress(piece))
        out += len(d.flush())
    elapsed = time.perf_counter() - t0
    http_.close()
    return elapsed, out


class WorkerRss:
    """Peak RSS of the worker's processes while a scan runs: the largest single process
    (the forked job process doing the scan) and the whole tree."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.single = 0
        self.total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in tree(self.pid):
                try:
                    rss = p.memory_info().rss
                except psutil.NoSuchProcess:
                    continue
                total += rss
                self.single = max(self.single, rss)
            self.total = max(self.total, total)
            time.sleep(0.05)

    def __enter__(self) -> WorkerRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def scan_once(stack: BenchStack, digest: str) -> dict[str, Any]:
    api = stack.api()
    assert stack.worker is not None
    with WorkerRss(stack.worker.pid) as rss:
        t0 = time.perf_counter()
        status, body = api.json("POST", "/api/v1/scans", {"repository": REPO,
                                                          "reference": digest})
        if status != 202:
            raise RuntimeError(f"POST /scans answered {status}: {body}")
        scan_id = body["id"]
        while True:
            _, scan = api.json("GET", f"/api/v1/scans/{scan_id}")
            if scan["status"] in ("succeeded", "failed"):
                break
            if time.perf_counter() - t0 > 900:
                raise RuntimeError("scan did not finish in 15 min")
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
    api.close()
    if scan["status"] != "succeeded":
        raise RuntimeError(f"scan failed: {scan.get('error')}")
    return {"seconds": elapsed, "worker_seconds": scan.get("duration_seconds"),
            "peak_rss_mib": rss.single / MIB, "peak_tree_rss_mib": rss.total / MIB,
            "packages": scan.get("packages"), "findings": len(scan.get("findings") or [])}


def run(stack: BenchStack, cfg: Config) -> Row:
    why = available()
    if why:
        row = Row("scan", "scan of a ~500 MiB, 5-layer image",
                  "download + decompress the layers only", "s",
                  "≤ 1.5× that time, worker RSS < 256 MiB", status="not yet available",
                  headline="not yet available")
        row.notes.append(why)
        return row
    api = stack.api()
    status, body = api.json("PUT", "/api/v1/policies/scanbench", POLICY)
    api.close()
    if status != 200:
        raise RuntimeError(f"policy PUT answered {status}: {body}")
    import_vulndb(stack)
    image = build_and_push(stack, cfg)
    phases = max(2, min(cfg.rounds, 3))
    base: list[float] = []
    scans: list[dict[str, Any]] = []
    cores: list[dict[str, float]] = []
    for r in range(phases):
        for what in (("floor", "scan") if r % 2 == 0 else ("scan", "floor")):
            stack.settle()
            with CpuMeter(stack) as meter:
                if what == "floor":
                    seconds, _ = download_decompress(stack, image["layers"])
                    base.append(seconds)
                else:
                    scans.append(scan_once(stack, image["digest"]))
            cores.append(meter.cores())
    times = [s["seconds"] for s in scans]
    ratio = [s / b for s, b in zip(times, base, strict=True)]
    rs = summary(ratio)
    peak = max(s["peak_rss_mib"] for s in scans)
    size = f"{image['compressed'] / MIB:.0f} MiB"
    row = Row("scan", f"scan of a {size}, {cfg.scan_layers}-layer gzip image",
              "download + decompress the layers only", "s",
              "≤ 1.5× that time, worker RSS < 256 MiB",
              baseline=summary(base), gateway=summary(times),
              headline=f"{rs['median']:.2f}× [{rs['min']:.2f}–{rs['max']:.2f}], "
                       f"peak RSS {peak:.0f} MiB",
              headline_value=rs["median"], headline_spread=(rs["min"], rs["max"]),
              met=rs["median"] <= 1.5 and peak < 256)
    row.notes.append("gateway column: the scan, POST /api/v1/scans to status succeeded (RQ "
                     "worker); baseline: this process GETs and gunzips the same layers; peak "
                     "RSS is the largest worker process (the forked job), tree total "
                     f"{max(s['peak_tree_rss_mib'] for s in scans):.0f} MiB")
    row.detail = {"scans": scans, "floor_s": base, "ratios": ratio, "image": {
        "compressed_mib": image["compressed"] / MIB, "build_s": image["build_s"],
        "digest": image["digest"]}, "cores_used": cores}
    return row
