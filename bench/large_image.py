"""Peak memory of the whole job on one large photo: does it stay bounded as images grow?

A benchmark, not a test. It makes the same photo (examples/sample/chelsea.jpg, upscaled) at
several sizes up to 60 megapixels, runs `matteflow run` on each in a fresh process (one row,
the real model unless --model says otherwise, cutout + mask PNG) and prints the child's peak
RSS and wall time per size, plus the bytes per source pixel above the smallest run.

    .venv/bin/python bench/large_image.py --out out/bench/large_image.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from matteflow.transforms.metrics import read_metrics

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "examples" / "sample" / "chelsea.jpg"
_STAGES = ("fetch_ms", "decode_ms", "infer_ms", "refine_ms", "encode_ms", "write_ms")


def _photo(megapixels: float, path: Path) -> tuple[int, int]:
    """The sample photo upscaled to about `megapixels`, as a quality-90 JPEG at path."""
    with Image.open(SOURCE) as img:
        ratio = img.width / img.height
        height = round((megapixels * 1e6 / ratio) ** 0.5)
        width = round(height * ratio)
        img.convert("RGB").resize((width, height), Image.Resampling.BICUBIC).save(path, quality=90)
    return width, height


def _run(image: Path, work: Path, model: str) -> tuple[float, float]:
    """(peak RSS in MB, wall s) of one `matteflow run` on image, in a child process."""
    manifest = work / "manifest.csv"
    manifest.write_text(f"uri\n{image}\n")
    out = work / f"out-{image.stem}"
    child = (
        "import resource, sys\n"
        "from matteflow.pipelines.remove_background import main\n"
        "code = main(sys.argv[1:])\n"
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
        "sys.exit(code)\n"
    )
    argv = ["--manifest", str(manifest), "--output", str(out), "--model", model]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", child, *argv], capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"run failed on {image}:\n{proc.stdout}\n{proc.stderr}")
    [row] = read_metrics(str(out)).to_pylist()
    if row["status"] != "ok":
        raise SystemExit(f"{image}: {row['status']} {row['error_code']}: {row['error_message']}")
    peak_kb = next(
        int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("PEAK_KB")
    )
    stages = ", ".join(f"{k[:-3]} {row[k] / 1e3:.1f}" for k in _STAGES if row[k] is not None)
    print(f"  stage seconds: {stages}", flush=True)
    return peak_kb / 1024, wall


def main() -> None:
    """Run the sizes and print (and optionally save) the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,12,30,60", help="megapixels, comma-separated")
    parser.add_argument("--model", default="isnet-general-use")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for mp in (float(s) for s in args.sizes.split(",")):
            image = work / f"photo-{mp:g}mp.jpg"
            width, height = _photo(mp, image)
            peak, wall = _run(image, work, args.model)
            results.append({"width": width, "height": height, "peak_rss_mb": peak, "wall_s": wall})
            print(
                f"{width}x{height} ({width * height / 1e6:.1f} MP): peak RSS {peak:.0f} MB,"
                f" {wall:.1f} s",
                flush=True,
            )
    base = results[0]
    for r in results[1:]:
        extra_px = r["width"] * r["height"] - base["width"] * base["height"]
        r["bytes_per_extra_pixel"] = (r["peak_rss_mb"] - base["peak_rss_mb"]) * 2**20 / extra_px
        print(
            f"{r['width']}x{r['height']}: {r['bytes_per_extra_pixel']:.1f} bytes of peak RSS"
            " per source pixel above the smallest run"
        )
    print(f"this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": args.model, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
