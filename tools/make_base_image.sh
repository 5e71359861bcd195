#!/usr/bin/env bash
# Make the base image of deploy/Dockerfile without an image registry: Debian bookworm
# (debootstrap --variant=minbase) with python3 and python3-venv, imported into the Docker
# engine with `docker import`. The root file system is kept as a tarball in the cache folder
# ($PROCGRAPH_IMAGE_CACHE, default ~/.cache/procgraph), so a second run only imports it.
#
#   tools/make_base_image.sh                    # -> procgraph/base:bookworm in $DOCKER_HOST's engine
#   tools/make_base_image.sh --tarball-only     # only make (or find) the cached tarball; print its path
#   tools/make_base_image.sh my/base:tag        # another tag
#   procgraph image build GRAPH --base procgraph/base:bookworm
#
# Needs root (debootstrap) and a Debian mirror ($DEBIAN_MIRROR, default http://deb.debian.org/debian).
set -euo pipefail

tarball_only=0
if [ "${1:-}" = "--tarball-only" ]; then tarball_only=1; shift; fi
tag="${1:-procgraph/base:bookworm}"
suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# what goes into the root file system; change the version below when this list changes
packages=python3,python3-venv,libstdc++6,libgomp1
version=1
cache="${PROCGRAPH_IMAGE_CACHE:-$HOME/.cache/procgraph}"
tarball="$cache/base-$suite-python3-v$version.tar"

if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "error: debootstrap not found: apt-get install -y debootstrap" >&2; exit 1; }
  [ "$(id -u)" = 0 ] || { echo "error: debootstrap needs root: run this script as root" >&2; exit 1; }
  mkdir -p "$cache"
  rootfs="$(mktemp -d "$cache/rootfs.XXXXXX")"
  trap 'rm -rf "$rootfs" "$tarball.part"' EXIT
  echo "== debootstrap --variant=minbase --include=$packages $suite ($mirror)" >&2
  started=$(date +%s)
  debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" "$mirror" >&2
  # what an image does not need: package caches and lists, documentation
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
         "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  tar --numeric-owner -C "$rootfs" -cf "$tarball.part" .
  mv "$tarball.part" "$tarball"
  echo "== $tarball ($(du -m "$tarball" | cut -f1) MB, $(( $(date +%s) - started )) s)" >&2
fi

if [ "$tarball_only" = 1 ]; then echo "$tarball"; exit 0; fi
command -v docker >/dev/null || { echo "error: no docker CLI: apt-get install -y docker.io" >&2; exit 1; }
echo "== docker import $tarball $tag" >&2
docker import --change 'CMD ["/bin/bash"]' "$tarball" "$tag" >/dev/null
echo "$tag"
