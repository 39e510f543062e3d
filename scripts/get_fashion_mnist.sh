#!/usr/bin/env bash
# Put Fashion-MNIST where `--dataset fashion_mnist --data-root DIR` reads it: DIR/FashionMNIST/raw/,
# the four upstream idx files, decompressed (torchvision's layout).
# Source, in order: files already there; torchvision's download (needs the internet); the Debian
# package dataset-fashion-mnist (an installed copy under /usr/share/datasets/fashion-mnist, or
# `apt-get download` + `dpkg-deb -x`). The decompressed files are checked by the sha256 of their
# content, since the Debian package recompresses them.
# Usage: scripts/get_fashion_mnist.sh DIR      (default DIR: data)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-data}"
RAW="$DIR/FashionMNIST/raw"
DEBIAN_COPY=/usr/share/datasets/fashion-mnist
declare -A SHA256=(
  [train-images-idx3-ubyte]=c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888
  [train-labels-idx1-ubyte]=bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9
  [t10k-images-idx3-ubyte]=5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b
  [t10k-labels-idx1-ubyte]=0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34
)

all_present() {
  local name
  for name in "${!SHA256[@]}"; do
    [ "$(sha256sum "$RAW/$name" 2>/dev/null | cut -d' ' -f1)" = "${SHA256[$name]}" ] || return 1
  done
}

from_gzip_folder() {  # decompress the four .gz files of folder $1 into $RAW
  local name
  for name in "${!SHA256[@]}"; do
    [ -f "$1/$name.gz" ] || return 1
  done
  for name in "${!SHA256[@]}"; do
    gzip -dc "$1/$name.gz" > "$RAW/.$name.tmp" && mv "$RAW/.$name.tmp" "$RAW/$name"
  done
}

from_torchvision() {
  local python="${BOOSTNET_VENV:-$ROOT/.venv}/bin/python"
  [ -x "$python" ] || python=python3
  timeout 300 "$python" - "$DIR" <<'PY' >/dev/null 2>&1
import sys
from torchvision.datasets import FashionMNIST
for train in (True, False):
    FashionMNIST(sys.argv[1], train=train, download=True)
PY
}

from_debian_package() {
  if [ -d "$DEBIAN_COPY" ] && from_gzip_folder "$DEBIAN_COPY"; then
    return 0
  fi
  local work
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' RETURN
  if ! (cd "$work" && apt-get download dataset-fashion-mnist >/dev/null 2>&1); then
    [ "$(id -u)" = 0 ] || return 1
    apt-get update -qq >/dev/null 2>&1 || return 1
    (cd "$work" && apt-get download dataset-fashion-mnist >/dev/null 2>&1) || return 1
  fi
  dpkg-deb -x "$work"/dataset-fashion-mnist_*.deb "$work/root" && from_gzip_folder "$work/root$DEBIAN_COPY"
}

mkdir -p "$RAW"
if all_present; then
  echo "[fashion-mnist] $RAW already holds the checked files" >&2
  exit 0
fi
for source in from_torchvision from_debian_package; do
  if "$source" && all_present; then
    echo "[fashion-mnist] $RAW ready (${source#from_})" >&2
    exit 0
  fi
done
echo "error: could not get Fashion-MNIST into $RAW: no internet for torchvision's download and no" \
     "Debian package dataset-fashion-mnist (try: apt-get update && apt-get install dataset-fashion-mnist)," \
     "or the files there have other contents" >&2
exit 1
