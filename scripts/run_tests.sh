#!/usr/bin/env bash
# Set up the environment if needed, then run the whole test suite (CPU only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec "${BOOSTNET_VENV:-$ROOT/.venv}/bin/python" -m pytest -q "$@" tests
