#!/usr/bin/env bash
# Build (and push) an image of ReST on Kubeflow.
#
#   containers/build.sh [--registry R] [--tag T] [--variant cpu|cuda|mlflow] [--no-push]
#                       [--base-image IMAGE | --debian-base] [--wheels DIR] [--pip-cert FILE]
#   containers/build.sh --local [--variant cpu|mlflow]     # no registry needed at all
#
# Settings come from flags, else the environment (REGISTRY, TAG, VARIANT, PUSH, BASE_IMAGE,
# WHEELS, PIP_CERT_FILE), else defaults: REGISTRY=ghcr.io/rest-kubeflow,
# TAG=<version in pyproject.toml>, VARIANT=cpu, PUSH=1, the Dockerfile's own base image.
# Image name: $REGISTRY/rest:$TAG (cpu), $REGISTRY/rest:$TAG-cuda, or (mlflow, the tracking
# server of manifests/) $REGISTRY/mlflow-server:$MLFLOW_TAG (default 3.17.2-1). The name is
# printed as the last line of output, so `export REST_IMAGE=$(containers/build.sh | tail -n1)`
# works; pipeline.py reads REST_IMAGE when it compiles.
#
#   --base-image IMAGE  build FROM this image (cpu, mlflow: a Debian-based Python 3.11 image)
#   --debian-base       build the base from Debian's packages first (containers/debian-base.sh;
#                       cached) and use it: for machines that reach no image registry
#   --wheels DIR        a local wheel directory; the torch CPU wheel is taken from it (cpu)
#   --pip-cert FILE     CA bundle for pip inside the build, passed as a BuildKit secret (never
#                       in a layer). Default: $PIP_CERT, else pip's configured `cert`, if any
#   --local             = --no-push --registry rest-local --debian-base, and --wheels with
#                       pip's find-links directory when it holds the torch wheel
#
# Builds use BuildKit (Docker >= 20.10): a docker CLI with the buildx plugin, or one older
# than 23 with BuildKit built in (Debian's docker.io); DOCKER=path picks the CLI.
# DRY_RUN=1 prints the docker commands instead of running them.
# Registry login is up to you (docker login); no credentials are read or stored here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

registry="${REGISTRY:-ghcr.io/rest-kubeflow}"
tag="${TAG:-}"
variant="${VARIANT:-cpu}"
push="${PUSH:-1}"
base_image="${BASE_IMAGE:-}"
wheels="${WHEELS:-}"
pip_cert="${PIP_CERT_FILE:-}"
debian_base=0
local_mode=0
registry_given="${REGISTRY:+1}"

while [ $# -gt 0 ]; do
  case "$1" in
    --registry) registry="$2"; registry_given=1; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --variant) variant="$2"; shift 2 ;;
    --no-push) push=0; shift ;;
    --base-image) base_image="$2"; shift 2 ;;
    --debian-base) debian_base=1; shift ;;
    --wheels) wheels="$2"; shift 2 ;;
    --pip-cert) pip_cert="$2"; shift 2 ;;
    --local) local_mode=1; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

if [ "$local_mode" = "1" ]; then
  push=0
  [ -n "$registry_given" ] || registry="rest-local"
  [ -n "$base_image" ] || debian_base=1
  if [ -z "$wheels" ]; then
    # pip's own find-links (this machine: /opt/wheels), when it holds the torch CPU wheel.
    for d in ${PIP_FIND_LINKS:-} $(python3 -m pip config get global.find-links 2>/dev/null || true); do
      if ls "$d"/torch-2.13.0+cpu-*.whl >/dev/null 2>&1; then wheels="$d"; break; fi
    done
  fi
fi

if [ -z "$tag" ]; then
  # The project version: one place to bump for a release.
  tag="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -n1)"
fi
if [ -z "$tag" ] || [ "$tag" = "latest" ]; then
  echo "build.sh: TAG must be a version (got '${tag}'): 'latest' makes runs and cache hits unreproducible" >&2
  exit 2
fi

case "$variant" in
  cpu) dockerfile="$here/Dockerfile"; image="${registry%/}/rest:${tag}" ;;
  cuda) dockerfile="$here/Dockerfile.cuda"; image="${registry%/}/rest:${tag}-cuda" ;;
  # The MLflow server image has its own version (MLflow's, plus a build number).
  mlflow) dockerfile="$here/Dockerfile.mlflow"; image="${registry%/}/mlflow-server:${MLFLOW_TAG:-3.17.2-1}" ;;
  *) echo "build.sh: VARIANT must be cpu, cuda or mlflow (got '$variant')" >&2; exit 2 ;;
esac
if [ "$variant" = "cuda" ] && { [ -n "$base_image" ] || [ "$debian_base" = "1" ]; }; then
  echo "build.sh: the cuda variant has its own base (the CUDA runtime); --base-image/--debian-base are for cpu and mlflow" >&2
  exit 2
fi
if [ -n "$wheels" ] && [ ! -d "$wheels" ]; then
  echo "build.sh: --wheels $wheels is not a directory" >&2
  exit 2
fi

if [ -z "$pip_cert" ]; then
  pip_cert="${PIP_CERT:-}"
  if [ -z "$pip_cert" ]; then
    pip_cert="$(python3 -m pip config get global.cert 2>/dev/null || true)"
  fi
fi
if [ -n "$pip_cert" ] && [ ! -f "$pip_cert" ]; then
  echo "build.sh: CA bundle $pip_cert not found (--pip-cert / PIP_CERT_FILE)" >&2
  exit 2
fi

# A docker CLI that builds with BuildKit (secret and bind mounts in RUN).
docker_cli="${DOCKER:-}"
if [ "${DRY_RUN:-0}" = "1" ]; then
  docker_cli="${docker_cli:-docker}"
elif [ -z "$docker_cli" ]; then
  for cand in docker /usr/bin/docker; do
    command -v "$cand" >/dev/null 2>&1 || continue
    if "$cand" buildx version >/dev/null 2>&1; then docker_cli="$cand"; break; fi
    major="$("$cand" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1 || true)"
    if [ -n "$major" ] && [ "$major" -lt 23 ] 2>/dev/null; then docker_cli="$cand"; break; fi
  done
  if [ -z "$docker_cli" ]; then
    echo "build.sh: no docker CLI here builds with BuildKit: install the buildx plugin, or Debian's docker.io (containers/docker-up.sh)" >&2
    exit 1
  fi
fi

run() {
  if [ "${DRY_RUN:-0}" = "1" ]; then
    echo "+ $*" >&2
  else
    "$@" >&2
  fi
}

export DOCKER_BUILDKIT=1
start=$SECONDS
build_args=()
if [ "$debian_base" = "1" ]; then
  if [ "${DRY_RUN:-0}" = "1" ]; then
    echo "+ bash $here/debian-base.sh" >&2
    base_image="rest-local/debian-python:3.11-bookworm"
  else
    base_image="$(DOCKER="$docker_cli" bash "$here/debian-base.sh" | tail -n1)"
  fi
fi
[ -n "$base_image" ] && build_args+=(--build-arg "BASE_IMAGE=$base_image")

if [ -n "$wheels" ] && [ "$variant" = "cpu" ]; then
  # The wheels become a FROM-scratch image that the Dockerfile bind-mounts while pip runs:
  # they are read, never copied into the component image. Named by the wheels' names and sizes.
  wheels_id="$(cd "$wheels" && ls -l -- *.whl 2>/dev/null | awk '{print $5, $NF}' | sha256sum | cut -c1-12)"
  wheels_image="rest-local/wheels:$wheels_id"
  if [ "${DRY_RUN:-0}" = "1" ] || ! "$docker_cli" image inspect "$wheels_image" >/dev/null 2>&1; then
    if [ "${DRY_RUN:-0}" = "1" ]; then
      echo "+ $docker_cli build --tag $wheels_image -f- $wheels  (FROM scratch; COPY *.whl /)" >&2
    else
      printf 'FROM scratch\nCOPY *.whl /\n' | "$docker_cli" build --tag "$wheels_image" -f- "$wheels" >&2
    fi
  fi
  build_args+=(--build-arg "WHEELS_IMAGE=$wheels_image")
fi

secret_args=()
[ -n "$pip_cert" ] && secret_args+=(--secret "id=pip_cert,src=$pip_cert")

run "$docker_cli" build --file "$dockerfile" --tag "$image" \
  ${build_args[@]+"${build_args[@]}"} ${secret_args[@]+"${secret_args[@]}"} \
  --label "org.opencontainers.image.version=$tag" \
  --label "org.opencontainers.image.source=https://github.com/rest-kubeflow/rest" \
  "$root"
if [ "$push" = "1" ]; then
  run "$docker_cli" push "$image"
fi
if [ "${DRY_RUN:-0}" != "1" ]; then
  echo "build.sh: built $image in $((SECONDS - start)) s ($("$docker_cli" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))" >&2
fi
echo "$image"
