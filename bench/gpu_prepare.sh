#!/usr/bin/env bash
# Build bench/wheels/wheels.tar.xz: the wheels bench/gpu_bench.py --install needs on an air-gapped GPU machine that
# has torch (and numpy, scipy, scikit-image, pandas, matplotlib, timm, einops, tifffile, requests, msgpack, rich ...)
# but none of our other dependencies and no internet. Run it here, in the repo root, where PyPI is reachable:
#
#     bash bench/gpu_prepare.sh              # PYVER=3.12 (the target machine's python3), ~3 min of one core
#     PYVER=3.11 bash bench/gpu_prepare.sh   # for a device whose python3 is 3.11
#
# Why an xz archive of re-stored wheels instead of the wheels themselves: the wheels are 68 MiB (SimpleITK alone
# 50 MiB, deflate-compressed), too large for some transfer limits; stored uncompressed and xz'd they are ~40 MiB.
# Sets: longnet/ = what `longnet` imports and the device lacks (installed --no-deps into the device's python);
# nnunet/ = nnunetv2 2.8.1 (sdist, built here into a py3 wheel) + what it needs beyond that (into a separate venv).
# Skipped on purpose (not imported on the paths we run, or already on the device): torch/torchvision/nvidia-*,
# timm, httpx (blosc2 imports it; on the device), pydantic (blosc2 imports it lazily), future/unittest2
# (batchgenerators metadata only), imagecodecs/graphviz/yacs (nnunetv2 metadata only).
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
LONGNET_SET=(SimpleITK==2.5.7 blosc2==4.14.1 ndindex==1.10.1 numexpr==2.14.2 dynamic-network-architectures==0.4.4
             batchgeneratorsv2==0.3.6 batchgenerators==0.25.5 monai==1.6.1 connected-components-3d==4.1.1)
SDIST_LONGNET=(acvl-utils==0.2.6)      # sdist only on PyPI: built into a py3-none-any wheel here
NNUNET_SET=(nibabel==5.4.2)
SDIST_NNUNET=(nnunetv2==2.8.1)
PLAT=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
TMP=$(mktemp -d /tmp/gpu_wheels.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
DL=(python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp "${PLAT[@]}")
"${DL[@]}" -d "$TMP/dl/longnet" "${LONGNET_SET[@]}"
"${DL[@]}" -d "$TMP/dl/nnunet" "${NNUNET_SET[@]}"
python3 -m pip wheel -q --no-deps -w "$TMP/dl/longnet" "${SDIST_LONGNET[@]}"
python3 -m pip wheel -q --no-deps -w "$TMP/dl/nnunet" "${SDIST_NNUNET[@]}"
echo "downloaded wheels (deflate), bytes:"
du -b "$TMP"/dl/*/*.whl | sed "s|$TMP/dl/||"
du -cb "$TMP"/dl/*/*.whl | tail -1
# Re-store every wheel uncompressed (still a valid wheel: RECORD hashes the files, not the zip entries) so that
# xz compresses the contents rather than deflate streams.
python3 - "$TMP/dl" "$TMP/stored" <<'EOF'
import copy, sys, zipfile
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for whl in sorted(src.glob("*/*.whl")):
    out = dst / whl.parent.name / whl.name
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(whl) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            stored = copy.copy(info)
            stored.compress_type = zipfile.ZIP_STORED
            zout.writestr(stored, data)
EOF
mkdir -p bench/wheels
rm -f bench/wheels/wheels.tar.xz
XZ_OPT="-6 -T0" nice tar -cJf bench/wheels/wheels.tar.xz -C "$TMP/stored" longnet nnunet
(cd "$TMP/stored" && ls -1 */*.whl) > bench/wheels/MANIFEST.txt
echo "python $PYVER; bench/wheels/wheels.tar.xz: $(du -b bench/wheels/wheels.tar.xz | cut -f1) bytes"
echo "carry it with:  carry=[\"bench/wheels\"]   (ignored through .gitignore, so it only travels when carried)"
