#!/usr/bin/env bash
# Wheels (and a git bundle of HEAD) that the lent GPU machine needs beyond its image, for
# tools/gpu/run_bench.sh. Run here, from anywhere in the checkout:
#
#     bash tools/gpu/wheels.sh                 # -> .whl/ (cp312, manylinux x86_64) + .whl/repo.bundle
#     PYVER=3.11 DEST=/tmp/w311 bash tools/gpu/wheels.sh   # same set for a local cp311 test venv
#
# The GPU image (KINDS.md "Python packages already there") has torch 2.11 + torchaudio, transformers,
# numpy, scipy, safetensors, tokenizers, tiktoken, sentencepiece, pyyaml, psutil, huggingface-hub,
# requests, regex, tqdm, numba, scikit-learn, joblib, msgpack, lazy-loader, build, tabulate, zipp,
# packaging. What it lacks, found by importing the reference path in a clean venv (README.md here):
#
#   funasr reference       funasr==1.4.16 (--no-deps: its modelscope, jieba, hydra, umap, oss2, ... are
#                          not imported on this path; funasr's package __init__ swallows the errors of
#                          the submodules that need them)
#                          omegaconf (funasr.utils.misc; 2.4 needs no antlr4 runtime)
#                          kaldiio (funasr.utils.load_utils, top level)
#                          librosa (funasr.utils.load_utils, top level; lazy-loads its submodules, so its
#                            audioread/pooch/decorator/soxr needs are never hit on this path)
#                          rapidfuzz (funasr.metrics.common, imported by sense_voice -> the encoder class)
#                          soundfile + cffi (funasr.models.fun_asr_nano.model, top level)
#                          kaldi-native-fbank (fbank fallback when torchaudio does not import)
#   this project           soundfile, soxr (pyproject dependencies; lazily imported by funasr_nano.io.audio)
#   asv quick suite        asv==0.6.6, asv_runner==0.3.2 (asv.conf.json's matrix pin), json5,
#                          importlib-metadata 8.7 (asv/__init__; 9+ pulls lazy-importer).
#                          Not carried: virtualenv (only the virtualenv env type), pympler (only mem_*).
#
# MLX itself travels separately (../shared/tools/mlx-cuda-parts.sh: .mlxa/ and .mlxb/).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
PYVER="${PYVER:-3.12}"
DEST="${DEST:-.whl}"

PKGS=(
  funasr==1.4.16
  omegaconf==2.4.0
  kaldiio==2.18.1
  librosa==0.11.0
  rapidfuzz==3.14.6
  soundfile==0.14.0
  cffi==2.1.1
  soxr==1.1.0
  kaldi-native-fbank==1.23.0
  asv==0.6.6
  asv_runner==0.3.2
  json5==0.17.3
  importlib-metadata==8.7.0
)

rm -rf "$DEST"
mkdir -p "$DEST"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST" "${PKGS[@]}" 2>&1 \
  | grep -v "^WARNING: Location" || true
n=$(ls "$DEST"/*.whl | wc -l)
if [ "$n" -ne "${#PKGS[@]}" ]; then
  echo "wheels.sh: expected ${#PKGS[@]} wheels, got $n:" >&2; ls "$DEST" >&2; exit 1
fi

if [ "$DEST" = ".whl" ]; then
  mkdir -p .git/info
  grep -qxF "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
  # HEAD's history, so the asv run there can file its results under this commit (the device gets
  # the working tree without .git; run_bench.sh rebuilds a repository from this bundle).
  git bundle create -q .whl/repo.bundle HEAD
  git rev-parse HEAD > .whl/HEAD.txt
fi
ls -l "$DEST"
du -ch "$DEST"/* | tail -1
