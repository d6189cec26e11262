"""Images/s and peak memory: the model alone, the whole pipeline, and rembg, on the same images.

A benchmark, not a test. Each part runs in its own process (so its peak RSS is its own) on the
same N images and weights:

  (a) model only: the forward pass at the production batch size (the pixel budget of
      `batching.max_pixels`) and precision, on tensors prepared beforehand: the limit;
  (b) end to end: `matteflow run` on a manifest of the images (DirectRunner, in process),
      images / the run's wall time (run.json), model load and preflight included;
  (c) rembg (`dis_custom`, the same ONNX file, its own venv; --rembg-venv), when given.

It prints images/s and peak RSS per part and the ratios b/a and b/c. `--scaling 100,1000` also
runs the pipeline on that many small generated images with the tiny model and compares peak
RSS (memory must stay flat as the run grows).

    .venv/bin/python bench/throughput.py --images 24 --rembg-venv .venv-rembg \
        --out out/bench/throughput.json
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

_MODEL_ONLY = textwrap.dedent(
    """
    import resource, sys, time, json
    import numpy as np, torch
    from PIL import Image
    from matteflow.models.registry import load
    from matteflow.pipelines.config import load_config
    from matteflow.transforms.inference import preprocess
    model_name, dtype, threads, paths = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    if threads > 0:
        torch.set_num_threads(threads)
    model = load(model_name, "cpu", dtype)
    size = model.spec.input_size
    budget = max(size * size, load_config().batching.max_pixels)
    batch = max(1, budget // (size * size))
    rgbs = [np.array(Image.open(p).convert("RGB")) for p in paths]
    x = [preprocess(rgb, model.spec, model.device) for rgb in rgbs]
    with torch.inference_mode():
        model(torch.stack(x[:batch]))  # warm-up, not timed
        start = time.perf_counter()
        for i in range(0, len(x), batch):
            model(torch.stack(x[i : i + batch]))
        seconds = time.perf_counter() - start
    print(json.dumps({"images": len(x), "seconds": seconds, "batch": batch,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)

_PIPELINE = textwrap.dedent(
    """
    import json, resource, sys
    from matteflow.pipelines.remove_background import main
    code = main(sys.argv[1:])
    out = sys.argv[sys.argv.index("--output") + 1]
    summary = json.load(open(out + "/run.json"))
    print(json.dumps({"code": code, "images": summary["counts"]["ok"], "seconds": summary["wall_s"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)

_REMBG = textwrap.dedent(
    """
    import json, resource, sys, time
    from PIL import Image
    from rembg import new_session, remove
    session = new_session("dis_custom", model_path=sys.argv[1])
    paths = sys.argv[2:]
    remove(Image.open(paths[0]), session=session, only_mask=True)  # warm-up, not timed
    start = time.perf_counter()
    for p in paths:
        remove(Image.open(p), session=session, only_mask=True)
    seconds = time.perf_counter() - start
    print(json.dumps({"images": len(paths), "seconds": seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    """
)


def _child(python: str, code: str, args: list[str], env: dict[str, str] | None = None) -> dict:
    """Run code in a fresh interpreter; its last stdout line is a JSON result."""
    proc = subprocess.run(
        [python, "-c", code, *args], capture_output=True, text=True, check=False, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _manifest(paths: list[Path], path: Path) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "uri"])
        writer.writerows([f"img{i:05d}", p] for i, p in enumerate(paths))
    return path


def _small_images(count: int, folder: Path) -> list[Path]:
    """count distinct 320 x 240 JPEGs (smooth noise, so they compress like photos)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        small = rng.integers(0, 256, (15, 20, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((320, 240), Image.Resampling.BICUBIC)
        paths.append(folder / f"s{i:05d}.jpg")
        img.save(paths[-1], quality=85)
    return paths


def _pipeline(paths: list[Path], work: Path, name: str, argv: list[str]) -> dict:
    manifest = _manifest(paths, work / f"{name}.csv")
    out = work / f"out-{name}"
    args = ["--manifest", str(manifest), "--output", str(out), *argv]
    return _child(sys.executable, _PIPELINE, args)


def _rate(part: dict) -> float:
    return float(part["images"]) / float(part["seconds"])


def main() -> None:
    """Run the parts and print (and optionally save) images/s, peak RSS and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/eval-dev"))
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--model", default="isnet-general-use")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0 = default")
    parser.add_argument("--rembg-venv", type=Path, help="a venv with rembg installed")
    parser.add_argument("--onnx", type=Path, help="ONNX file for rembg (default: model path)")
    parser.add_argument("--scaling", default="", help="e.g. 100,1000 (tiny model)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    with (args.data / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    paths = [args.data / rows[i % len(rows)]["image"] for i in range(args.images)]
    megapixels = sum(Image.open(p).width * Image.open(p).height for p in paths) / 1e6
    results: dict[str, object] = {"images": len(paths), "megapixels": megapixels}
    print(f"{len(paths)} images ({megapixels:.1f} MP), model {args.model}, {args.dtype}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_only = _child(
            sys.executable,
            _MODEL_ONLY,
            [args.model, args.dtype, str(args.threads), *map(str, paths)],
        )
        print(
            f"(a) model only, batch {model_only['batch']}: {_rate(model_only):.3f} images/s,"
            f" peak RSS {model_only['peak_rss_mb']:.0f} MB",
            flush=True,
        )
        settings = ["--set", f"model.dtype={args.dtype}"]
        if args.threads > 0:
            settings += ["--set", f"model.torch_threads={args.threads}"]
        pipeline = _pipeline(paths, work, "e2e", ["--model", args.model, *settings])
        print(
            f"(b) end to end: {_rate(pipeline):.3f} images/s, peak RSS"
            f" {pipeline['peak_rss_mb']:.0f} MB; b/a = {_rate(pipeline) / _rate(model_only):.2f}",
            flush=True,
        )
        results.update(
            model_only=model_only, pipeline=pipeline, b_over_a=_rate(pipeline) / _rate(model_only)
        )
        if args.rembg_venv:
            onnx = args.onnx or _onnx_path()
            with tempfile.TemporaryDirectory() as home:
                (Path(home) / onnx.name).write_bytes(onnx.read_bytes())
                env = {"REMBG_HOME": home, "PATH": "/usr/bin:/bin"}
                rembg = _child(
                    str(args.rembg_venv / "bin" / "python"),
                    _REMBG,
                    [str(Path(home) / onnx.name), *map(str, paths)],
                    env,
                )
            print(
                f"(c) rembg: {_rate(rembg):.3f} images/s, peak RSS {rembg['peak_rss_mb']:.0f}"
                f" MB; b/c = {_rate(pipeline) / _rate(rembg):.2f}",
                flush=True,
            )
            results.update(rembg=rembg, b_over_c=_rate(pipeline) / _rate(rembg))
        scaling = {}
        for count in (int(c) for c in args.scaling.split(",") if c):
            small = _small_images(count, work / "small")
            run = _pipeline(small, work, f"scale{count}", ["--model", "tiny-isnet"])
            scaling[count] = run
            print(
                f"scaling, tiny model, {count} images: peak RSS {run['peak_rss_mb']:.0f} MB,"
                f" {_rate(run):.1f} images/s",
                flush=True,
            )
        if len(scaling) >= 2:
            low, high = min(scaling), max(scaling)
            growth = scaling[high]["peak_rss_mb"] / scaling[low]["peak_rss_mb"] - 1
            print(f"peak RSS {high} vs {low} images: {growth:+.1%}")
            results["scaling"] = {**{str(k): v for k, v in scaling.items()}, "growth": growth}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


def _onnx_path() -> Path:
    """The registry model's ONNX file from MATTEFLOW_MODEL_PATH's folders."""
    from matteflow.models.registry import get_spec
    from matteflow.models.weights import find_file

    path, notes = find_file(get_spec("isnet-general-use"))
    if path is None:
        raise SystemExit(f"no ONNX file for rembg: {notes}; pass --onnx")
    return Path(path)


if __name__ == "__main__":
    main()
