#!/usr/bin/env bash
# Fetches a CPU libtorch 2.9.0 for burn's tch backend (`--backend libtorch`, cargo feature `tch`)
# through PyPI: `pip download` of three pinned wheels (nothing installed or run), sha256-checked.
#
#   scripts/fetch-libtorch.sh          (~910 MB download, ~490 MB kept)
#
# Why it is assembled by hand: tch 0.22 binds exactly libtorch 2.9.0, and PyPI's only Linux
# x86_64 torch 2.9.0 wheel is the CUDA build (CPU-only libtorch lives on pytorch.org, out of reach
# here). Its libtorch_cpu.so carries every CPU kernel and needs only CUDA's runtime and CUPTI
# libraries (two small wheels, loaded but unused without a GPU); libtorch_cuda.so is left out, and
# libtorch.so, an empty umbrella that would pull it in, is replaced by an empty library of that
# name so tch's build links against the CPU part alone.
# Destination: $FREEAL_BENCH_LIBTORCH, else ~/.cache/freeal-bench/libtorch-2.9.0.
set -euo pipefail

DEST="${FREEAL_BENCH_LIBTORCH:-$HOME/.cache/freeal-bench/libtorch-2.9.0}"
PYTHON="${PYTHON:-python3}"
CC="${CC:-cc}"

TORCH_WHL=torch-2.9.0-cp311-cp311-manylinux_2_28_x86_64.whl
TORCH_SHA=51de31219c97c51cf4bf2be94d622e3deb5dcc526c6dc00e97c17eaec0fc1d67
CUDART_WHL=nvidia_cuda_runtime_cu12-12.8.90-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
CUDART_SHA=adade8dcbd0edf427b7204d480d6066d33902cab2a4707dcfc48a2d0fd44ab90
CUPTI_WHL=nvidia_cuda_cupti_cu12-12.8.90-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
CUPTI_SHA=ea0cb07ebda26bb9b29ba82cda34849e73c166c18162d3913575b0c9db9a6182

say_build() {
  cat <<EOF
libtorch 2.9.0 (CPU part): ready in $DEST
Build and run with it:
  export LIBTORCH=$DEST LIBTORCH_CXX11_ABI=1 LD_LIBRARY_PATH=$DEST/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
  cargo run --release --features tch -- experiments/sst2.toml --backend libtorch
EOF
}

if [ -f "$DEST/.complete" ]; then
  say_build
  exit 0
fi

# shellcheck source=scripts/check-sha.sh
. "$(dirname "$0")/check-sha.sh"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
echo "libtorch: downloading torch==2.9.0 (900 MB) and CUDA's runtime + CUPTI (11 MB) from PyPI"
# The platform and Python are pinned so that the same files come down on any host; only the
# Python-independent libtorch inside is used.
"$PYTHON" -m pip download --progress-bar on --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --python-version 3.11 \
  -d "$WORK" torch==2.9.0 nvidia-cuda-runtime-cu12==12.8.90 nvidia-cuda-cupti-cu12==12.8.90
check_sha "$WORK/$TORCH_WHL" "$TORCH_SHA"
check_sha "$WORK/$CUDART_WHL" "$CUDART_SHA"
check_sha "$WORK/$CUPTI_WHL" "$CUPTI_SHA"

rm -rf "$DEST.partial"
mkdir -p "$DEST.partial/lib"
"$PYTHON" - "$WORK" "$DEST.partial" "$TORCH_WHL" "$CUDART_WHL" "$CUPTI_WHL" <<'EOF'
import os, shutil, sys, zipfile
work, dest, torch_whl, cudart_whl, cupti_whl = sys.argv[1:]
libs = {
    (torch_whl, "torch/lib/libc10.so"), (torch_whl, "torch/lib/libtorch_cpu.so"),
    (torch_whl, "torch/lib/libgomp.so.1"),
    (cudart_whl, "nvidia/cuda_runtime/lib/libcudart.so.12"),
    (cupti_whl, "nvidia/cuda_cupti/lib/libcupti.so.12"),
}
for wheel, member in sorted(libs):
    with zipfile.ZipFile(os.path.join(work, wheel)) as z, z.open(member) as src, \
            open(os.path.join(dest, "lib", os.path.basename(member)), "wb") as out:
        shutil.copyfileobj(src, out)
with zipfile.ZipFile(os.path.join(work, torch_whl)) as z:
    for member in z.namelist():
        if member.startswith("torch/include/") and not member.endswith("/"):
            target = os.path.join(dest, member[len("torch/"):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(member) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
EOF
chmod 755 "$DEST.partial"/lib/*
echo "" > "$WORK/empty.c"
"$CC" -shared -fPIC -Wl,-soname,libtorch.so -o "$DEST.partial/lib/libtorch.so" "$WORK/empty.c"
touch "$DEST.partial/.complete"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
say_build
