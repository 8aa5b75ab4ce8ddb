#!/usr/bin/env bash
# Build (and push) the component image.
#
#   containers/build.sh [--registry R] [--tag T] [--variant cpu|cuda|mlflow] [--no-push]
#
# Settings come from flags, else the environment (REGISTRY, TAG, VARIANT, PUSH), else defaults:
# REGISTRY=ghcr.io/rest-kubeflow, TAG=<version in pyproject.toml>, VARIANT=cpu, PUSH=1.
# Image name: $REGISTRY/rest:$TAG (cpu), $REGISTRY/rest:$TAG-cuda, or (mlflow, the tracking
# server of manifests/) $REGISTRY/mlflow-server:$MLFLOW_TAG (default 3.17.2-1). The name is printed as
# the last line of output, so `export REST_IMAGE=$(containers/build.sh | tail -n1)` works;
# pipeline.py reads REST_IMAGE when it compiles.
# DRY_RUN=1 prints the docker commands instead of running them.
# Registry login is up to you (docker login); no credentials are read or stored here.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"

registry="${REGISTRY:-ghcr.io/rest-kubeflow}"
tag="${TAG:-}"
variant="${VARIANT:-cpu}"
push="${PUSH:-1}"

while [ $# -gt 0 ]; do
  case "$1" in
    --registry) registry="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --variant) variant="$2"; shift 2 ;;
    --no-push) push=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

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

run() {
  if [ "${DRY_RUN:-0}" = "1" ]; then
    echo "+ $*" >&2
  else
    "$@" >&2
  fi
}

run docker build --file "$dockerfile" --tag "$image" \
  --label "org.opencontainers.image.version=$tag" \
  --label "org.opencontainers.image.source=https://github.com/rest-kubeflow/rest" \
  "$root"
if [ "$push" = "1" ]; then
  run docker push "$image"
fi
echo "$image"
