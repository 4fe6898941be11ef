#!/usr/bin/env bash
# MLX's CUDA wheels for the lent GPU machine, split so that the SECOND call carries as little as
# possible: .mlxa/part_aa (60,000,000 bytes: first call, machine still cold) and .mlxb/ (the rest of
# mlx-cuda-13 + the mlx wheel, ~30 MB: second call, which must reach the machine within its 30 s
# warm window). With ../shared/tools/mlx-cuda-parts.sh's 45 + 42 MB split the second upload
# outlasted that window on 2026-12-02 and the machine went cold. Run from anywhere in the checkout.
set -euo pipefail
cd "$(dirname "$0")/../.."
ver="${MLX_VERSION:-0.32.4}"
tmp="$(mktemp -d)"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_35_x86_64 "mlx-cuda-13==$ver" "mlx==$ver" -d "$tmp"
rm -rf .mlxa .mlxb && mkdir -p .mlxa .mlxb
whl=$(ls "$tmp"/mlx_cuda_13-"$ver"-*.whl)
head -c 60000000 "$whl" > .mlxa/part_aa
tail -c +60000001 "$whl" > .mlxb/part_ab
cp "$tmp"/mlx-"$ver"-cp312-*.whl .mlxb/
cat .mlxa/part_aa .mlxb/part_ab | cmp - "$whl"
mkdir -p "$(git rev-parse --git-common-dir)/info"
ex="$(git rev-parse --git-common-dir)/info/exclude"
for d in /.mlxa/ /.mlxb/ /.whl/; do grep -qxF "$d" "$ex" 2>/dev/null || echo "$d" >> "$ex"; done
rm -rf "$tmp"
ls -la .mlxa .mlxb
