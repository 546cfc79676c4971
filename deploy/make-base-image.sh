#!/usr/bin/env bash
# Makes Telemed's base image from Debian's own packages, for machines that reach Debian's
# mirror but no image registry: debootstrap a minimal Debian with Python 3.11, then
# `podman import` its root file system as an image.
#
#   deploy/make-base-image.sh [IMAGE]      (default localhost/telemed-base:bookworm)
#
# Needs root, debootstrap and podman. SUITE and MIRROR choose another Debian release or
# mirror. Where a registry is reachable, `FROM docker.io/library/debian:bookworm-slim`
# with the same packages installed does the same job.
set -euo pipefail

image=${1:-localhost/telemed-base:bookworm}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
# Python 3.11 with venv and pip (Telemed's wheel and its dependencies are installed in a
# virtual environment), CA certificates (PyPI over HTTPS), a font with Cyrillic letters
# (conclusion PDFs).
packages=python3,python3-venv,ca-certificates,fonts-dejavu-core

root=$(mktemp -d)
# --one-file-system: never into a /proc or /sys that a failed debootstrap left mounted.
trap 'rm -rf --one-file-system "$root" || true' EXIT
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >&2
# What an image needs no copy of: the package lists and the downloaded packages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
tar -C "$root" --numeric-owner -c . \
    | podman import --change 'CMD ["/bin/bash"]' - "$image" >/dev/null
echo "$image"
