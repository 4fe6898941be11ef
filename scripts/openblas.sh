# Sourced: preload OpenBLAS for MLX's CPU backend on Linux when it is (or can be) installed.
# Set FUNASR_NANO_NO_OPENBLAS=1 to keep MLX's bundled reference BLAS.
if [ "$(uname -s)" = "Linux" ] && [ -z "${FUNASR_NANO_NO_OPENBLAS:-}" ]; then
  _ob=/usr/lib/$(uname -m)-linux-gnu/openblas-pthread/libopenblas.so.0
  if [ ! -e "$_ob" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    (apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1 || \
      (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq libopenblas0-pthread >/dev/null 2>&1)) || true
  fi
  if [ -e "$_ob" ]; then
    export LD_PRELOAD="${_ob}${LD_PRELOAD:+:$LD_PRELOAD}"
    echo "funasr-nano: MLX CPU backend will use OpenBLAS ($_ob)" >&2
  else
    echo "funasr-nano: OpenBLAS not available; MLX CPU uses its reference BLAS (slow)" >&2
  fi
  unset _ob
fi
