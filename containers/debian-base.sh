#!/usr/bin/env bash
# Build a Python 3.11 base image from Debian's own packages, for machines that reach a Debian
# mirror and a package index but no image registry (no `FROM python:...` pull possible).
#
#   bash containers/debian-base.sh [--name NAME:TAG] [--mirror URL] [--force]
#
# debootstrap (minbase variant) unpacks Debian bookworm with python3 (3.11, the Python the
# CPU torch wheel is built for), python3-venv (ensurepip, so a venv gets pip) and
# ca-certificates into a temporary root, which `docker import` turns into an image. The
# apt caches, docs and man pages are dropped first. Skips all work when the image already
# exists (--force rebuilds). Needs root (debootstrap) and a Docker engine
# (containers/docker-up.sh). The mirror defaults to the first Debian mirror apt uses here,
# else deb.debian.org. The image name is printed as the last line:
#
#   BASE_IMAGE=$(bash containers/debian-base.sh | tail -n1)
#   bash containers/build.sh --no-push --base-image "$BASE_IMAGE"
#
# Environment: BASE_NAME, DEBIAN_MIRROR, DEBIAN_SUITE (bookworm), DOCKER (the docker CLI).
set -euo pipefail

name="${BASE_NAME:-rest-local/debian-python:3.11-bookworm}"
mirror="${DEBIAN_MIRROR:-}"
suite="${DEBIAN_SUITE:-bookworm}"
force=0
docker="${DOCKER:-docker}"

while [ $# -gt 0 ]; do
  case "$1" in
    --name) name="$2"; shift 2 ;;
    --mirror) mirror="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "debian-base.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$force" = "0" ] && "$docker" image inspect "$name" >/dev/null 2>&1; then
  echo "debian-base.sh: $name exists (--force rebuilds it)" >&2
  echo "$name"
  exit 0
fi

if [ "$(id -u)" != "0" ]; then
  echo "debian-base.sh: debootstrap needs root" >&2
  exit 1
fi

if [ -z "$mirror" ]; then
  # deb822 sources (URIs: ...) first, then one-line sources (deb URL suite ...).
  mirror="$(sed -n 's/^URIs:[[:space:]]*\(\S*\/debian\)\/\?$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 || true)"
  if [ -z "$mirror" ]; then
    mirror="$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\(\S*\/debian\)\/\?[[:space:]].*/\2/p' \
      /etc/apt/sources.list 2>/dev/null | head -n1 || true)"
  fi
  mirror="${mirror:-http://deb.debian.org/debian}"
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  echo "debian-base.sh: installing debootstrap" >&2
  export DEBIAN_FRONTEND=noninteractive
  nice -n 19 apt-get install -y --no-install-recommends debootstrap >&2 \
    || { nice -n 19 apt-get update >&2 && nice -n 19 apt-get install -y --no-install-recommends debootstrap >&2; }
fi

rootfs="$(mktemp -d /var/tmp/rest-base.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
start=$SECONDS
echo "debian-base.sh: debootstrap $suite from $mirror into $rootfs" >&2
nice -n 19 debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$suite" "$rootfs" "$mirror" >&2

# Lean: no package caches, lists, docs or man pages in the image.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
  "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
  "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old "$rootfs"/root/.cache

echo "debian-base.sh: importing as $name" >&2
tar --numeric-owner -C "$rootfs" -c . | nice -n 19 "$docker" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --message "debootstrap --variant=minbase $suite ($mirror) + python3 python3-venv ca-certificates" \
  - "$name" >&2
echo "debian-base.sh: built $name in $((SECONDS - start)) s" >&2
echo "$name"
