#!/usr/bin/env bash
# Benchmark otcore against its peers in a dedicated environment.
#
# Creates .venv-bench (once), installs otcore with the bench extra, and runs the Sinkhorn
# benchmark; arguments are passed on (for example --quick). Run from anywhere:
#     bash bench/run.sh [--quick]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x .venv-bench/bin/python ]; then
    python3 -m venv .venv-bench
fi
.venv-bench/bin/python -m pip install --progress-bar off -q -e ".[bench]"
exec .venv-bench/bin/python -m bench.sinkhorn "$@"
