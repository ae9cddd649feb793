#!/usr/bin/env bash
# Builds a stand-in for python:3.11-slim-bookworm from Debian's own packages, for machines
# that reach Debian's archive and PyPI but no container registry (no Docker Hub): debootstrap
# minbase bookworm + python3, python3-venv, python3-pip, ca-certificates; `python` on PATH;
# this machine's CA bundle (so pip inside a build trusts what the host trusts). Tagged with the
# official name so an unmodified Dockerfile builds against it with `--pull-never`.
#
# Vendored from the team's shared tool ../shared/tools/container-smoke/base-image.sh (issue 23)
# so that a clean clone (CI) needs nothing outside the repository; changed here: Debian's
# mirror when the host is not Debian, --no-install-recommends, and a label carrying this
# script's sha256 (tests/container/test_image.py rebuilds the base when the script changes).
#
# usage: base-image.sh [IMAGE_NAME]     (default docker.io/library/python:3.11-slim-bookworm)
# Needs root, debootstrap and buildah (Debian packages; `make image-deps` installs them).
# About a minute.
set -euo pipefail
name=${1:-docker.io/library/python:3.11-slim-bookworm}
script_sha=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
command -v debootstrap >/dev/null && command -v buildah >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends debootstrap buildah debian-archive-keyring >/dev/null; }
mirror=""
if grep -qx 'ID=debian' /etc/os-release 2>/dev/null; then
  mirror=$(sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)
  [ -n "$mirror" ] || mirror=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list 2>/dev/null)
fi
[ -n "$mirror" ] || mirror=http://deb.debian.org/debian
root=$(mktemp -d -t py-base-XXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
  bookworm "$root" "$mirror" >/dev/null
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
c=$(buildah from scratch)
buildah add "$c" "$root" / >/dev/null
buildah config --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 --env PIP_CERT=/etc/ssl/certs/ca-certificates.crt --cmd python3 \
  --label "org.tagwarden.test.base-script-sha256=$script_sha" "$c"
buildah commit -q "$c" "$name" >/dev/null
buildah rm "$c" >/dev/null
echo "$name"
