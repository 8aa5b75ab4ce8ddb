#!/usr/bin/env bash
# The tiny ReST pipeline with every task inside the component image, in one command:
#
#   bash containers/run-tiny-pipeline.sh [--output-dir DIR] [--smoke] [-- RUN-LOCAL FLAGS]
#
# Starts a Docker engine if none answers (containers/docker-up.sh), builds the images without
# a registry (containers/build.sh --local: Debian-packaged base, torch from the local wheel
# directory; cached, the project layer rebuilt from the working tree), then runs
# containers/run_tiny_pipeline.py: an S3 server (moto) on 127.0.0.1, the MLflow server as a
# container of the MLflow server image, and every pipeline task as a container of the
# component image (uid 1000, read-only root, /tmp a tmpfs, host network). Without run-local
# flags: the test suite's tiny settings on the first rows of the bundled corpus, starting from
# the shipped policy. --smoke runs only the prepare component (what CI runs).
# Output (default runs/container): summary.json/.md, containers.json (which task ran in
# which image with which settings), run.log.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=0
for a in "$@"; do [ "$a" = "--smoke" ] && smoke=1; [ "$a" = "--" ] && break; done

EXTRAS=test bash scripts/install.sh >&2          # the host side: pipeline.py, kfp, moto
bash containers/docker-up.sh >/dev/null
rest_image="$(bash containers/build.sh --local | tail -n1)"
args=(--image "$rest_image")
if [ "$smoke" = "0" ]; then
  args+=(--mlflow-image "$(bash containers/build.sh --local --variant mlflow | tail -n1)")
fi
exec python containers/run_tiny_pipeline.py "${args[@]}" "$@"
