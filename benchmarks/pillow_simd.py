"""Pillow against pillow-simd on the same PNGs, in one run: each interpreter decodes the same files and
box-resizes them to 256 (pillow-simd replaces Pillow's distribution, so each lives in its own venv).

    python -m venv /tmp/simd && /tmp/simd/bin/pip install pillow-simd
    python benchmarks/pillow_simd.py --pngs 'DIR/*.png' --simd-python /tmp/simd/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._common import write_result  # noqa: E402

INNER = r"""
import glob, io, json, sys, time
import PIL
from PIL import Image
datas = [open(p, 'rb').read() for p in sorted(glob.glob(sys.argv[1]))[: int(sys.argv[2])]]
def rate(fn):
    fn(datas[0]); t = time.perf_counter()
    for d in datas: fn(d)
    return len(datas) / (time.perf_counter() - t)
print(json.dumps({"version": PIL.__version__,
                  "decode_images_per_s": rate(lambda d: Image.open(io.BytesIO(d)).load()),
                  "decode_resize_images_per_s": rate(
                      lambda d: Image.open(io.BytesIO(d)).resize((256, 256), Image.Resampling.BOX))}))
"""


def measure(python: str, pngs: str, n: int) -> dict:
    out = subprocess.run([python, "-c", INNER, pngs, str(n)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pngs", required=True, help="glob of PNG files")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--simd-python", required=True, help="python of a venv with pillow-simd")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    res = {"images": args.n, "pillow": [], "pillow_simd": []}
    for _ in range(2):  # alternate, to spread machine noise over both
        res["pillow"].append(measure(sys.executable, args.pngs, args.n))
        res["pillow_simd"].append(measure(args.simd_python, args.pngs, args.n))
    for k in ("pillow", "pillow_simd"):
        best = max(r["decode_images_per_s"] for r in res[k])
        both = max(r["decode_resize_images_per_s"] for r in res[k])
        print(f"{k:12s} {res[k][0]['version']}: decode {best:.0f} images/s, decode + BOX resize {both:.0f} images/s")
    ratio = max(r["decode_images_per_s"] for r in res["pillow_simd"]) / max(
        r["decode_images_per_s"] for r in res["pillow"]
    )
    res["simd_vs_pillow_decode"] = round(ratio, 3)
    print(f"pillow-simd / Pillow decode: {ratio:.2f}x")
    print(f"wrote {write_result('pillow_simd', res, args.out)}")


if __name__ == "__main__":
    main()
