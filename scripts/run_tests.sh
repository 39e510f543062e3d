#!/usr/bin/env bash
# Set up the environment if needed, get Fashion-MNIST into data/ if needed (offline: from the Debian
# package), then run the whole test suite (CPU only).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
bash "$ROOT/scripts/get_fashion_mnist.sh" "${BOOSTNET_FASHION_MNIST_ROOT:-$ROOT/data}"
cd "$ROOT"
exec "${BOOSTNET_VENV:-$ROOT/.venv}/bin/python" -m pytest -q "$@" tests
