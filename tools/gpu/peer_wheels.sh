#!/usr/bin/env bash
# Wheels the lent GPU machine needs for tools/peers.py beyond the image and tools/gpu/wheels.sh's set
# (run here; the GPU machine has no network). -> .peerwhl/<peer>/*.whl, ~16 MB, carried by the
# `peers` call of tools/gpu/run_bench.sh, which installs each peer's wheels into its own --target dir
# (/tmp/peers/<peer>) and hands that dir to tools/peers.py as --site <peer>=DIR.
#
#   peer          wheels (all --no-deps)       why only these
#   transformers  transformers==5.24.0         the image has 5.17.0; 5.24.0 is what the CPU table ran,
#                                              and the -hf form is written by the same version that
#                                              loads it. Its requirements (huggingface-hub>=1.31,
#                                              tokenizers 0.23.x, safetensors>=0.8, regex, typer) are
#                                              in the image; torchaudio 2.11.0 matches the image's torch.
#   mlx-audio     mlx-audio==0.6.2             at run time it imports only transformers (>=5.14: the
#                                              image's 5.17), huggingface_hub, jinja2, sentencepiece,
#                                              tqdm (all in the image) and mlx 0.32.4 (carried for the
#                                              project, /tmp/site); its converter needs torch (image).
#   funasr-mlx    funasr-mlx==0.2.3            imports mlx, numpy, pyyaml, safetensors, psutil,
#                                              transformers (slow Qwen2 tokenizer), torch for its
#                                              converter: all in the image or /tmp/site.
#   funasr, this project: the wheels of tools/gpu/wheels.sh (call 1) and MLX (call 2).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
DEST="${DEST:-.peerwhl}"
rm -rf "$DEST"
for spec in transformers:transformers==5.24.0 mlx-audio:mlx-audio==0.6.2 funasr-mlx:funasr-mlx==0.2.3; do
  peer=${spec%%:*}; pkg=${spec#*:}
  mkdir -p "$DEST/$peer"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$DEST/$peer" "$pkg" 2>&1 | grep -v "^WARNING: Location" || true
  ls "$DEST/$peer"/*.whl >/dev/null
done
if [ "$DEST" = ".peerwhl" ]; then
  mkdir -p .git/info 2>/dev/null || true
  f=$(git rev-parse --git-path info/exclude)
  grep -qxF "/.peerwhl/" "$f" 2>/dev/null || echo "/.peerwhl/" >> "$f"
fi
find "$DEST" -name "*.whl" -exec ls -l {} \;
du -sh "$DEST"
