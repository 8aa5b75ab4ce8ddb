#!/usr/bin/env bash
# The test suite: unit tests of the core, tiny pipeline runs through kfp.local, and
# integration tests against real local servers (mlflow server, an S3 server). Slow suites
# are marked and need --runslow. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS=test bash scripts/install.sh
exec python -m pytest "$@"
