"""Tests for testkit/oci.py: deterministic OCI images that skopeo can read."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile

import pytest

from testkit import oci


def _members(layer: oci.Layer) -> dict[str, tarfile.TarInfo]:
    raw = gzip.decompress(layer.data) if layer.media_type == oci.OCI_LAYER_GZIP else layer.data
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        return {m.name: m for m in tf.getmembers()}


def _read(layer: oci.Layer, name: str) -> bytes:
    raw = gzip.decompress(layer.data) if layer.media_type == oci.OCI_LAYER_GZIP else layer.data
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
        fh = tf.extractfile(name)
        assert fh is not None
        return fh.read()


# --------------------------------------------------------------------------- pure


@pytest.mark.unit
def test_tar_layer_is_deterministic():
    files = {"b.txt": "bee", "a/x.bin": b"\x00\x01"}
    one = oci.tar_layer(files, dirs=["a"], symlinks={"link": "b.txt"})
    two = oci.tar_layer(dict(reversed(files.items())), dirs=["a"], symlinks={"link": "b.txt"})
    assert one == two
    assert one.digest == "sha256:" + hashlib.sha256(one.data).hexdigest()
    assert one.size == len(one.data)
    assert one.media_type == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert one.diff_id == "sha256:" + hashlib.sha256(gzip.decompress(one.data)).hexdigest()
    assert oci.tar_layer({"b.txt": "bee!"}).digest != oci.tar_layer({"b.txt": "bee"}).digest
    assert oci.tar_layer(files, mtime=5).digest != oci.tar_layer(files).digest


@pytest.mark.unit
def test_gzip_layer_holds_exactly_the_given_members():
    layer = oci.tar_layer(
        {"etc/app.conf": "k=v\n", "bin/tool": b"\x7fELF", oci.whiteout("etc/old"): b""},
        dirs=["etc", "bin"],
        symlinks={"usr/bin/tool": "/bin/tool"},
        mtime=1234,
    )
    members = _members(layer)
    assert sorted(members) == [
        "bin",
        "bin/tool",
        "etc",
        "etc/.wh.old",
        "etc/app.conf",
        "usr/bin/tool",
    ]
    assert members["etc"].isdir() and members["bin"].isdir()
    assert members["usr/bin/tool"].issym() and members["usr/bin/tool"].linkname == "/bin/tool"
    assert members["etc/.wh.old"].isfile() and members["etc/.wh.old"].size == 0
    for m in members.values():
        assert (m.uid, m.gid, m.mtime) == (0, 0, 1234)
    assert _read(layer, "etc/app.conf") == b"k=v\n"
    assert _read(layer, "bin/tool") == b"\x7fELF"


@pytest.mark.unit
def test_uncompressed_and_zstd_layers(monkeypatch):
    plain = oci.tar_layer({"f": "x"}, compression="none")
    assert plain.media_type == "application/vnd.oci.image.layer.v1.tar"
    assert plain.digest == plain.diff_id
    assert plain.diff_id == oci.tar_layer({"f": "x"}).diff_id
    assert list(_members(plain)) == ["f"]

    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(RuntimeError, match="zstandard"):
        oci.tar_layer({"f": "x"}, compression="zstd")
    monkeypatch.undo()

    try:
        import zstandard  # noqa: F401
    except ImportError:
        return
    z = oci.tar_layer({"f": "x"}, compression="zstd")
    assert z.media_type == "application/vnd.oci.image.layer.v1.tar+zstd"
    assert z.diff_id == plain.diff_id
    assert z == oci.tar_layer({"f": "x"}, compression="zstd")


@pytest.mark.unit
def test_tar_layer_rejects_bad_input():
    with pytest.raises(ValueError):
        oci.tar_layer({"gone": None})
    with pytest.raises(ValueError):
        oci.tar_layer({"f": "x"}, compression="lz4")
    with pytest.raises(ValueError):
        oci.tar_layer({"f": "x"}, dirs=["f"])


@pytest.mark.unit
def test_whiteout_and_opaque_names():
    assert oci.whiteout("a/b/c") == "a/b/.wh.c"
    assert oci.whiteout("/a/b/c/") == "a/b/.wh.c"
    assert oci.whiteout("top") == ".wh.top"
    assert oci.opaque("var/cache") == "var/cache/.wh..wh..opq"
    assert oci.opaque("var/cache/") == "var/cache/.wh..wh..opq"


@pytest.mark.unit
def test_random_layer_is_seeded_and_incompressible():
    a = oci.random_layer(64 * 1024, seed=1)
    assert a == oci.random_layer(64 * 1024, seed=1)
    assert a.digest != oci.random_layer(64 * 1024, seed=2).digest
    assert a.media_type == oci.OCI_LAYER
    (name,) = _members(a)
    assert len(_read(a, name)) == 64 * 1024
    gz = oci.random_layer(64 * 1024, seed=1, compression="gzip")
    assert gz.diff_id == a.diff_id
    assert gz.size > 64 * 1024  # random data does not compress


@pytest.mark.unit
def test_image_config_and_manifest():
    img = oci.simple_image("alpha", nlayers=3)
    assert len(img.layers) == 3
    config = json.loads(img.config_bytes())
    assert config["architecture"] == "amd64" and config["os"] == "linux"
    assert config["rootfs"] == {"type": "layers", "diff_ids": [la.diff_id for la in img.layers]}
    manifest = json.loads(img.manifest_bytes())
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": img.config_digest,
        "size": len(img.config_bytes()),
    }
    assert [la["digest"] for la in manifest["layers"]] == [la.digest for la in img.layers]
    assert {la["mediaType"] for la in manifest["layers"]} == {oci.OCI_LAYER_GZIP}
    assert img.digest == "sha256:" + hashlib.sha256(img.manifest_bytes()).hexdigest()

    labelled = oci.Image(layers=img.layers, labels={"team": "infra"})
    assert json.loads(labelled.config_bytes())["config"]["Labels"] == {"team": "infra"}


@pytest.mark.unit
def test_simple_image_digests_follow_the_name():
    assert oci.simple_image("a").digest == oci.simple_image("a").digest
    assert oci.simple_image("a").digest != oci.simple_image("b").digest
    a, b = oci.simple_image("a"), oci.simple_image("b")
    assert not {la.digest for la in a.layers} & {la.digest for la in b.layers}
    extra = oci.simple_image("a", extra_files={"etc/motd": "hi"})
    assert extra.digest != a.digest
    assert "etc/motd" in _members(extra.layers[-1])


@pytest.mark.unit
def test_docker_manifest_variant():
    img = oci.simple_image("docker")
    manifest = json.loads(oci.docker_manifest_bytes(img))
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert manifest["config"]["digest"] == img.config_digest
    assert [la["mediaType"] for la in manifest["layers"]] == [
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    ] * 2
    with pytest.raises(ValueError):
        oci.docker_manifest_bytes(oci.Image(layers=[oci.random_layer(10)]))


@pytest.mark.unit
def test_write_layout_structure(tmp_path):
    single = oci.simple_image("one")
    amd, arm = oci.simple_image("multi"), oci.simple_image("multi")
    arm.architecture = "arm64"
    root = oci.write_layout(tmp_path / "layout", {"one": single, "multi": [amd, arm]})
    assert root == tmp_path / "layout"
    assert json.loads((root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}

    index = json.loads((root / "index.json").read_text())
    by_ref = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
    assert by_ref["one"]["digest"] == single.digest
    assert by_ref["one"]["mediaType"] == oci.OCI_MANIFEST
    assert by_ref["multi"]["digest"] == oci.index_digest([amd, arm])
    assert by_ref["multi"]["mediaType"] == oci.OCI_INDEX

    def blob(digest: str) -> bytes:
        return (root / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()

    child_index = json.loads(blob(oci.index_digest([amd, arm])))
    assert [m["platform"] for m in child_index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux"},
    ]
    for img in (single, amd, arm):
        assert blob(img.digest) == img.manifest_bytes()
        assert blob(img.config_digest) == img.config_bytes()
        for la in img.layers:
            assert blob(la.digest) == la.data

    # a second call adds and replaces refs without dropping the others
    oci.write_layout(root, {"one": oci.simple_image("uno"), "two": oci.simple_image("two")})
    index = json.loads((root / "index.json").read_text())
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert sorted(refs) == ["multi", "one", "two"]


# --------------------------------------------------------------------------- skopeo


def test_skopeo_reads_single_image_manifest(tmp_path):
    img = oci.simple_image("single")
    root = oci.write_layout(tmp_path / "src", {"v1": img})
    raw = oci.skopeo_inspect_raw(f"oci:{root}:v1")
    assert raw == img.manifest_bytes()
    assert oci.skopeo_digest(f"oci:{root}:v1") == img.digest


def test_skopeo_reads_index(tmp_path):
    images = [oci.simple_image("idx"), oci.Image(oci.simple_image("idx").layers, "arm64")]
    root = oci.write_layout(tmp_path / "src", {"multi": images})
    assert oci.skopeo_inspect_raw(f"oci:{root}:multi") == oci.index_bytes(images)
    assert oci.skopeo_digest(f"oci:{root}:multi") == oci.index_digest(images)


def test_skopeo_inspect_unknown_ref_raises(tmp_path):
    root = oci.write_layout(tmp_path / "src", {"v1": oci.simple_image("x")})
    with pytest.raises(oci.SkopeoError, match="no descriptor found"):
        oci.skopeo_inspect_raw(f"oci:{root}:nope")


def test_skopeo_copy_single_image_oci_to_oci(tmp_path):
    img = oci.simple_image("copy", extra_files={"etc/motd": "hello"})
    src = oci.write_layout(tmp_path / "src", {"v1": img})
    dst = tmp_path / "dst"
    proc = oci.skopeo_copy(f"oci:{src}:v1", f"oci:{dst}:v1")
    assert proc.returncode == 0, proc.stderr
    assert oci.skopeo_digest(f"oci:{dst}:v1") == img.digest
    assert oci.skopeo_inspect_raw(f"oci:{dst}:v1") == img.manifest_bytes()


def test_skopeo_copy_index_all_platforms(tmp_path):
    images = [oci.simple_image("plat"), oci.Image(oci.simple_image("plat2").layers, "arm64")]
    src = oci.write_layout(tmp_path / "src", {"multi": images})
    dst = tmp_path / "dst"
    proc = oci.skopeo_copy(f"oci:{src}:multi", f"oci:{dst}:multi", all_platforms=True)
    assert proc.returncode == 0, proc.stderr
    assert oci.skopeo_digest(f"oci:{dst}:multi") == oci.index_digest(images)
    for img in images:
        blob = dst / "blobs" / "sha256" / img.digest.split(":", 1)[1]
        assert blob.read_bytes() == img.manifest_bytes()


def test_skopeo_copy_index_without_all_picks_one_platform(tmp_path):
    images = [oci.simple_image("amd"), oci.Image(oci.simple_image("arm").layers, "arm64")]
    src = oci.write_layout(tmp_path / "src", {"multi": images})
    proc = oci.skopeo_copy(f"oci:{src}:multi", f"oci:{tmp_path / 'dst'}:one")
    assert proc.returncode == 0, proc.stderr
    assert oci.skopeo_digest(f"oci:{tmp_path / 'dst'}:one") in {img.digest for img in images}


def test_skopeo_copy_failure_is_reported_not_raised(tmp_path):
    src = oci.write_layout(tmp_path / "src", {"v1": oci.simple_image("x")})
    proc = oci.skopeo_copy(f"oci:{src}:missing", f"oci:{tmp_path / 'dst'}:v1")
    assert proc.returncode != 0
    assert "missing" in proc.stderr
