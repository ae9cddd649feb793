"""Build real OCI images on disk (OCI image layout) and drive skopeo against them.

Everything here is deterministic: the same inputs always produce byte-identical
blobs, manifests and indexes, hence identical digests.  Only the standard library
is used; zstd layers additionally need the optional ``zstandard`` module.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import json
import os
import random
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "REF_NAME_ANNOTATION",
    "Image",
    "Layer",
    "SkopeoError",
    "docker_manifest_bytes",
    "index_bytes",
    "index_digest",
    "opaque",
    "random_layer",
    "sha256_digest",
    "simple_image",
    "skopeo_copy",
    "skopeo_digest",
    "skopeo_inspect_raw",
    "tar_layer",
    "whiteout",
    "write_layout",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

_EPOCH = "1970-01-01T00:00:00Z"
_MEDIA_TYPES = {"gzip": OCI_LAYER_GZIP, "zstd": OCI_LAYER_ZSTD, "none": OCI_LAYER}
_LOCAL_TRANSPORTS = (
    "oci:",
    "oci-archive:",
    "dir:",
    "docker-archive:",
    "docker-daemon:",
    "containers-storage:",
    "tarball:",
    "sif:",
    "ostree:",
)


def sha256_digest(data: bytes) -> str:
    """Return the ``sha256:<hex>`` digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- layers


@dataclass(frozen=True)
class Layer:
    """A compressed layer blob plus the descriptor facts needed to reference it."""

    data: bytes
    media_type: str
    digest: str
    diff_id: str
    size: int

    def descriptor(self) -> dict[str, Any]:
        """Return the OCI descriptor of this layer."""
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


def whiteout(path: str) -> str:
    """Return the OCI whiteout path deleting ``path`` (``a/b/c`` -> ``a/b/.wh.c``)."""
    head, _, name = path.strip("/").rpartition("/")
    if not name:
        raise ValueError(f"cannot whiteout {path!r}")
    return f"{head}/.wh.{name}" if head else f".wh.{name}"


def opaque(dir: str) -> str:
    """Return the opaque-whiteout marker path for directory ``dir``."""
    d = dir.strip("/")
    return f"{d}/.wh..wh..opq" if d else ".wh..wh..opq"


def _compress(tar: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(tar, compresslevel=6, mtime=0)
    if compression == "zstd":
        try:
            zstandard = importlib.import_module("zstandard")
        except ImportError as exc:
            raise RuntimeError("zstd layers need the 'zstandard' module") from exc
        compressed: bytes = zstandard.ZstdCompressor(level=3).compress(tar)
        return compressed
    if compression == "none":
        return tar
    raise ValueError(f"unknown compression {compression!r} (gzip, zstd or none)")


def _layer_from_tar(tar: bytes, compression: str) -> Layer:
    if compression not in _MEDIA_TYPES:
        raise ValueError(f"unknown compression {compression!r} (gzip, zstd or none)")
    data = _compress(tar, compression)
    return Layer(
        data=data,
        media_type=_MEDIA_TYPES[compression],
        digest=sha256_digest(data),
        diff_id=sha256_digest(tar),
        size=len(data),
    )


def _norm(path: str) -> str:
    p = path.strip("/")
    if not p or p in (".", "..") or p.startswith("../") or "/../" in f"/{p}/":
        raise ValueError(f"invalid layer path {path!r}")
    return p


def tar_layer(
    files: dict[str, bytes | str | None],
    *,
    compression: str = "gzip",
    dirs: list[str] | None = None,
    symlinks: dict[str, str] | None = None,
    mtime: int = 0,
) -> Layer:
    """Build a deterministic layer tar from files/dirs/symlinks, compressed as asked."""
    entries: dict[str, tarfile.TarInfo] = {}
    payloads: dict[str, bytes] = {}

    def add(name: str, info: tarfile.TarInfo) -> None:
        if name in entries:
            raise ValueError(f"duplicate layer entry {name!r}")
        info.mtime = mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        entries[name] = info

    for d in dirs or []:
        name = _norm(d)
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        add(name, info)
    for path, content in files.items():
        if content is None:
            raise ValueError(f"file {path!r} has no content; delete files with whiteout(path): b''")
        name = _norm(path)
        raw = content.encode() if isinstance(content, str) else bytes(content)
        info = tarfile.TarInfo(name)
        info.type = tarfile.REGTYPE
        info.mode = 0o644
        info.size = len(raw)
        add(name, info)
        payloads[name] = raw
    for path, target in (symlinks or {}).items():
        name = _norm(path)
        info = tarfile.TarInfo(name)
        info.type = tarfile.SYMTYPE
        info.mode = 0o777
        info.linkname = target
        add(name, info)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name in sorted(entries):
            payload = payloads.get(name)
            tf.addfile(entries[name], io.BytesIO(payload) if payload is not None else None)
    return _layer_from_tar(buf.getvalue(), compression)


def random_layer(size: int, *, seed: int = 0, compression: str = "none") -> Layer:
    """Build a layer holding one file of ``size`` incompressible pseudo-random bytes."""
    if size < 0:
        raise ValueError("size must be >= 0")
    payload = random.Random(seed).randbytes(size)
    return tar_layer({f"random-{seed}.bin": payload}, compression=compression)


# --------------------------------------------------------------------------- images


@dataclass
class Image:
    """A single-platform image: layers plus platform and optional config labels."""

    layers: list[Layer] = field(default_factory=list)
    architecture: str = "amd64"
    os: str = "linux"
    labels: dict[str, str] | None = None

    def config_bytes(self) -> bytes:
        """Return the OCI image config JSON (with rootfs.diff_ids)."""
        config: dict[str, Any] = {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]}
        if self.labels:
            config["Labels"] = dict(sorted(self.labels.items()))
        return _json_bytes(
            {
                "created": _EPOCH,
                "architecture": self.architecture,
                "os": self.os,
                "config": config,
                "rootfs": {"type": "layers", "diff_ids": [la.diff_id for la in self.layers]},
                "history": [
                    {"created": _EPOCH, "created_by": f"tagwarden-test layer {i}"}
                    for i in range(len(self.layers))
                ],
            }
        )

    @property
    def config_digest(self) -> str:
        """Digest of the config blob."""
        return sha256_digest(self.config_bytes())

    def config_descriptor(self, media_type: str = OCI_CONFIG) -> dict[str, Any]:
        """Return the config descriptor (OCI media type unless told otherwise)."""
        cfg = self.config_bytes()
        return {"mediaType": media_type, "digest": sha256_digest(cfg), "size": len(cfg)}

    def manifest_bytes(self) -> bytes:
        """Return the OCI image manifest v1 JSON."""
        return _json_bytes(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": self.config_descriptor(),
                "layers": [la.descriptor() for la in self.layers],
            }
        )

    @property
    def digest(self) -> str:
        """Digest of the OCI manifest bytes."""
        return sha256_digest(self.manifest_bytes())

    @property
    def platform(self) -> dict[str, str]:
        """The ``platform`` object used for this image inside an index."""
        return {"architecture": self.architecture, "os": self.os}

    def blobs(self) -> dict[str, bytes]:
        """Return digest -> bytes for the config and every layer."""
        out = {la.digest: la.data for la in self.layers}
        cfg = self.config_bytes()
        out[sha256_digest(cfg)] = cfg
        return out


def docker_manifest_bytes(image: Image) -> bytes:
    """Return a Docker schema2 manifest for ``image`` (gzip layers only)."""
    bad = [la.media_type for la in image.layers if la.media_type != OCI_LAYER_GZIP]
    if bad:
        raise ValueError(f"docker schema2 manifests need gzip layers, got {bad}")
    return _json_bytes(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": image.config_descriptor(DOCKER_CONFIG),
            "layers": [
                {"mediaType": DOCKER_LAYER_GZIP, "digest": la.digest, "size": la.size}
                for la in image.layers
            ],
        }
    )


def index_bytes(images: list[Image]) -> bytes:
    """Return an OCI image index JSON listing ``images`` with their platforms."""
    manifests = []
    for img in images:
        mb = img.manifest_bytes()
        manifests.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": sha256_digest(mb),
                "size": len(mb),
                "platform": img.platform,
            }
        )
    return _json_bytes({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})


def index_digest(images: list[Image]) -> str:
    """Return the digest of ``index_bytes(images)``."""
    return sha256_digest(index_bytes(images))


def simple_image(name: str, *, extra_files: dict | None = None, nlayers: int = 2) -> Image:
    """Return a small gzip image whose content (hence digest) is derived from ``name``."""
    if nlayers < 0:
        raise ValueError("nlayers must be >= 0")
    layers = []
    for i in range(nlayers):
        files: dict[str, bytes | str | None] = {
            f"tagwarden/layer-{i}.txt": f"image {name!r} layer {i}\n",
        }
        if extra_files and i == nlayers - 1:
            files.update(extra_files)
        layers.append(tar_layer(files))
    if extra_files and nlayers == 0:
        layers.append(tar_layer(dict(extra_files)))
    return Image(layers=layers, labels={"org.opencontainers.image.title": name})


# --------------------------------------------------------------------------- layout


def _write_blob(blobdir: Path, data: bytes) -> str:
    digest = sha256_digest(data)
    target = blobdir / digest.split(":", 1)[1]
    if not target.exists():
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    return digest


def write_layout(path: str | os.PathLike[str], images: dict[str, Image | list[Image]]) -> Path:
    """Write (or extend) an OCI image layout with one ``ref.name`` per key; return it."""
    root = Path(path)
    blobdir = root / "blobs" / "sha256"
    blobdir.mkdir(parents=True, exist_ok=True)
    (root / "oci-layout").write_bytes(_json_bytes({"imageLayoutVersion": "1.0.0"}))

    index_path = root / "index.json"
    existing: list[dict[str, Any]] = []
    if index_path.exists():
        existing = json.loads(index_path.read_bytes()).get("manifests", [])
    existing = [
        m for m in existing if m.get("annotations", {}).get(REF_NAME_ANNOTATION) not in images
    ]

    entries = []
    for ref, value in images.items():
        group = value if isinstance(value, list) else [value]
        for img in group:
            for data in img.blobs().values():
                _write_blob(blobdir, data)
            _write_blob(blobdir, img.manifest_bytes())
        if isinstance(value, list):
            top, media_type = index_bytes(value), OCI_INDEX
        else:
            top, media_type = value.manifest_bytes(), OCI_MANIFEST
        entry: dict[str, Any] = {
            "mediaType": media_type,
            "digest": _write_blob(blobdir, top),
            "size": len(top),
        }
        if not isinstance(value, list):
            entry["platform"] = value.platform
        entry["annotations"] = {REF_NAME_ANNOTATION: ref}
        entries.append(entry)

    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": existing + entries}
    tmp = index_path.with_name("index.json.tmp")
    tmp.write_bytes(_json_bytes(index))
    os.replace(tmp, index_path)
    return root


# --------------------------------------------------------------------------- skopeo


class SkopeoError(subprocess.CalledProcessError):
    """A failed skopeo invocation whose message includes skopeo's stderr."""

    def __str__(self) -> str:
        err = self.stderr
        if isinstance(err, bytes):
            err = err.decode(errors="replace")
        return f"{super().__str__()}\nstderr:\n{(err or '').strip()}"


def _is_docker(ref: str) -> bool:
    return ref.startswith("docker://")


def _skopeo_base() -> list[str]:
    cmd = ["skopeo"]
    policies = [Path.home() / ".config/containers/policy.json", Path("/etc/containers/policy.json")]
    if not any(p.exists() for p in policies):
        cmd.append("--insecure-policy")
    return cmd


def _timed_out(cmd: list[str], exc: subprocess.TimeoutExpired, text: bool
               ) -> subprocess.CompletedProcess[Any]:
    def norm(v: Any) -> Any:
        if v is None:
            return "" if text else b""
        if text and isinstance(v, bytes):
            return v.decode(errors="replace")
        return v

    note = f"\n[tagwarden test helper] skopeo timed out after {exc.timeout}s\n"
    stderr = norm(exc.stderr) + (note if text else note.encode())
    return subprocess.CompletedProcess(cmd, 124, norm(exc.stdout), stderr)


# Credentials used for docker:// sides when a call passes none (the test harness sets the
# gateway's token here); pass creds="" to send none.
DEFAULT_CREDS: str | None = None


def skopeo_copy(
    src: str,
    dst: str,
    *,
    all_platforms: bool = False,
    creds: str | None = None,
    timeout: int = 120,
    extra: list[str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``skopeo copy src dst`` and return the completed process (never raises)."""
    cmd = _skopeo_base() + ["copy", "--retry-times", "0"]
    creds = DEFAULT_CREDS if creds is None else creds
    if all_platforms:
        cmd.append("--all")
    if _is_docker(src):
        cmd.append("--src-tls-verify=false")
        if creds:
            cmd += ["--src-creds", creds]
    if _is_docker(dst):
        cmd.append("--dest-tls-verify=false")
        if creds:
            cmd += ["--dest-creds", creds]
    cmd += list(extra or [])
    cmd += [src, dst]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        return _timed_out(cmd, exc, text=True)


def _with_transport(ref: str) -> str:
    if _is_docker(ref) or ref.startswith(_LOCAL_TRANSPORTS):
        return ref
    return "docker://" + ref


def skopeo_inspect_raw(ref: str, creds: str | None = None, *, timeout: int = 60) -> bytes:
    """Return the raw manifest bytes of ``ref`` (``docker://`` assumed if no transport)."""
    ref = _with_transport(ref)
    cmd = _skopeo_base() + ["inspect", "--raw", "--retry-times", "0"]
    creds = DEFAULT_CREDS if creds is None else creds
    if _is_docker(ref):
        cmd.append("--tls-verify=false")
        if creds:
            cmd += ["--creds", creds]
    cmd.append(ref)
    if shutil.which(cmd[0]) is None:
        raise FileNotFoundError("skopeo is not installed")
    proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise SkopeoError(proc.returncode, cmd, proc.stdout, proc.stderr)
    return proc.stdout


def skopeo_digest(ref: str, creds: str | None = None) -> str:
    """Return the ``sha256:`` digest of the raw manifest skopeo reads for ``ref``."""
    return sha256_digest(skopeo_inspect_raw(ref, creds))
