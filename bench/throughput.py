"""Images/s and peak memory: the model alone, the whole pipeline, and rembg, on the same images.

A benchmark, not a test. Each part runs in its own process (so its peak RSS is its own) on the
same N images and weights:

  (a) model only: the forward pass at the production batch size (the pixel budget of
      `batching.max_pixels`), precision, memory layout, inference size and threads, on
      tensors prepared beforehand: the limit; model load and one warm-up batch not timed;
  (b) end to end: `matteflow run` on a manifest of the images (DirectRunner, in process
      unless --beam says otherwise). It runs twice, on the N images and on 2N (each image
      twice, under two ids), and the steady rate is N / (T(2N) - T(N)): what the run adds per
      image once started, so that, as in (a) and (c), model load and start-up are left out.
      The rate of the N-image run over its whole wall time is printed beside it;
  (c) rembg (`dis_custom`, the same ONNX file, its own venv; --rembg-venv), when given; its
      session creation and one warm-up image not timed.

Settings come from the default profile plus `--set TABLE.KEY=VALUE` (as for `matteflow run`)
and apply to (a) and (b) alike. It prints images/s and peak RSS per part and the ratios b/a
and b/c. `--scaling 100,1000` also runs the pipeline on that many small generated images with
the tiny model and compares peak RSS (memory must stay flat as the run grows).

    .venv/bin/python bench/throughput.py --images 24 --rembg-venv .venv-rembg \
        --out out/bench/throughput.json

`--whole` measures instead what a user sees: the whole process, wall clock, start-up included.
`--images` eval-dev images upscaled (Lanczos, bench/photos.py) to about `--megapixels` each
are written as JPEG into a folder under `--work` (outside the repository), and that folder goes
through `matteflow run` (a subprocess, default settings: cutout + mask PNG) and through
`rembg p` (`dis_custom`, the same ONNX file, --rembg-venv), alternated `--rounds` times. It
prints each run's wall time, time to first image (start to the first output file) and peak
RSS, the minimum of each tool, and the ratio rembg / matteflow (> 1: matteflow is faster).

    .venv/bin/python bench/throughput.py --whole --images 30 --megapixels 2.5 \
        --rembg-venv /work/wt/rembg-venv --work /tmp/matteflow-bench
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from photos import upscaled

_MODEL_ONLY = textwrap.dedent(
    """
    import resource, shlex, sys, time, json
    from concurrent.futures import ThreadPoolExecutor
    import numpy as np, torch
    from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions
    from PIL import Image
    from matteflow.models.registry import load
    from matteflow.pipelines.config import load_config
    from matteflow.pipelines.progress import local_worker_flags
    from matteflow.models.threads import inference_threads, torch_threads
    from matteflow.transforms.inference import preprocess
    settings, beam, paths = json.loads(sys.argv[1]), shlex.split(sys.argv[2]), sys.argv[3:]
    cfg = load_config(settings=settings)
    options = PipelineOptions([*beam, *local_worker_flags(beam)])
    workers = options.view_as(DirectOptions).direct_num_workers
    threads = inference_threads(cfg.model.torch_threads)
    m = cfg.model
    model = load(m.name, m.device, m.dtype, channels_last=m.channels_last)
    size = m.inference_size or model.spec.input_size
    batch = max(1, max(size * size, cfg.batching.max_pixels) // (size * size))
    rgbs = [np.array(Image.open(p).convert("RGB")) for p in paths]
    x = [preprocess(rgb, model.spec, model.device, size) for rgb in rgbs]
    batches = [torch.stack(x[i : i + batch]) for i in range(0, len(x), batch)]
    def forward(b):  # the thread count set in the thread that runs it, as the pipeline does
        with torch_threads(threads), torch.inference_mode():
            model(b)
    # As the pipeline runs it: `workers` threads share the model, each with its own batches.
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(forward, batches[:workers]))  # warm-up, not timed
        if model.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        list(pool.map(forward, batches))
        if model.device.type == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: wait before reading the clock
        seconds = time.perf_counter() - start
    print(json.dumps({"images": len(x), "seconds": seconds, "batch": batch, "size": size,
                      "dtype": model.dtype_name, "workers": workers,
                      "threads": threads,
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


def _say(results: dict[str, object], key: str, text: str, value: object) -> None:
    print(text, flush=True)
    results[key] = value


def main() -> None:
    """Run the parts and print (and optionally save) images/s, peak RSS and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/eval-dev"))
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--model", default="isnet-general-use")
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="TABLE.KEY=VALUE"
    )
    parser.add_argument(
        "--beam", default="", help="Beam options for (b), e.g. --direct_num_workers=2"
    )
    parser.add_argument("--rembg-venv", type=Path, help="a venv with rembg installed")
    parser.add_argument("--onnx", type=Path, help="ONNX file for rembg (default: model path)")
    parser.add_argument("--scaling", default="", help="e.g. 100,1000 (tiny model)")
    parser.add_argument("--skip", default="", help="parts to leave out, e.g. a,c")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--whole", action="store_true", help="whole process vs rembg p")
    parser.add_argument("--megapixels", type=float, default=2.5, help="with --whole")
    parser.add_argument("--rounds", type=int, default=2, help="with --whole")
    parser.add_argument("--work", type=Path, default=Path("/tmp/matteflow-bench"))
    args = parser.parse_args()
    if args.whole:
        results = whole_process(args)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2))
        return
    with (args.data / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    paths = [(args.data / rows[i % len(rows)]["image"]).resolve() for i in range(args.images)]
    megapixels = sum(Image.open(p).width * Image.open(p).height for p in paths) / 1e6
    settings = [f"model.name={args.model}", *args.settings]
    results: dict[str, object] = {"images": len(paths), "megapixels": megapixels}
    results["settings"], results["beam"] = settings, args.beam
    print(f"{len(paths)} images ({megapixels:.1f} MP); settings {settings}; beam {args.beam!r}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "a" not in args.skip:
            a = _child(
                sys.executable, _MODEL_ONLY, [json.dumps(settings), args.beam, *map(str, paths)]
            )
            text = (
                f"(a) model only, {a['dtype']} at {a['size']} px, batch {a['batch']},"
                f" {a['workers']} worker threads x {a['threads']} torch threads:"
                f" {_rate(a):.3f} images/s, peak RSS"
                f" {a['peak_rss_mb']:.0f} MB"
            )
            _say(results, "model_only", text, a)
        if "b" not in args.skip:
            argv = [arg for s in settings for arg in ("--set", s)] + shlex.split(args.beam)
            once = _pipeline(paths, work, "e2e", argv)
            twice = _pipeline(paths + paths, work, "e2e-twice", argv)
            steady = {**twice, "images": len(paths), "seconds": twice["seconds"] - once["seconds"]}
            text = (
                f"(b) end to end: steady {_rate(steady):.3f} images/s ({len(paths)} more images"
                f" took {steady['seconds']:.1f} s more); whole run of {len(paths)} images"
                f" {_rate(once):.3f} images/s; peak RSS {twice['peak_rss_mb']:.0f} MB"
            )
            _say(results, "pipeline", text, {"steady": steady, "once": once, "twice": twice})
        if "a" not in args.skip and "b" not in args.skip:
            ratio = _rate(steady) / _rate(a)
            _say(results, "b_over_a", f"b/a = {ratio:.2f}", ratio)
        if args.rembg_venv:
            onnx = args.onnx or _onnx_path()
            with tempfile.TemporaryDirectory() as home:
                (Path(home) / onnx.name).write_bytes(onnx.read_bytes())
                env = {"REMBG_HOME": home, "PATH": "/usr/bin:/bin"}
                c = _child(
                    str(args.rembg_venv / "bin" / "python"),
                    _REMBG,
                    [str(Path(home) / onnx.name), *map(str, paths)],
                    env,
                )
            text = f"(c) rembg: {_rate(c):.3f} images/s, peak RSS {c['peak_rss_mb']:.0f} MB"
            _say(results, "rembg", text, c)
            if "b" not in args.skip:
                ratio = _rate(steady) / _rate(c)
                _say(results, "b_over_c", f"b/c = {ratio:.2f}", ratio)
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
            text = f"peak RSS {high} vs {low} images: {growth:+.1%}"
            _say(
                results,
                "scaling",
                text,
                {**{str(k): v for k, v in scaling.items()}, "growth": growth},
            )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))


def _timed(command: list[str], env: dict[str, str], outputs: Path, pattern: str) -> dict:
    """Run a command to its end: wall seconds, seconds to its first output file (matching
    `pattern` under `outputs`), outputs written, its own peak RSS and CPU seconds (user +
    system, all its threads: the work it did, which a busy machine does not inflate much)."""
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.mkdir(parents=True)
    started = time.time()
    clock = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - clock
    log = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    if status != 0:
        raise SystemExit(f"{command[0]} failed ({status}):\n{log[-3000:]}")
    files = list(outputs.glob(pattern))
    first = min((p.stat().st_mtime for p in files), default=float("nan")) - started
    return {"seconds": seconds, "first_image_s": first, "outputs": len(files),
            "peak_rss_mb": usage.ru_maxrss / 1024,
            "cpu_s": usage.ru_utime + usage.ru_stime}  # fmt: skip


def whole_process(args: argparse.Namespace) -> dict[str, object]:
    """`matteflow run` vs `rembg p` on the same folder of upscaled photos, alternated."""
    if not args.rembg_venv:
        raise SystemExit("--whole needs --rembg-venv")
    folder = args.work / f"{args.megapixels:g}mp-{args.images}"
    photos = upscaled(args.data, args.images, args.megapixels, folder)
    megapixels = sum(Image.open(p).width * Image.open(p).height for p in photos) / len(photos)
    onnx = args.onnx or _onnx_path()
    home = args.work / "rembg-home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / onnx.name).exists():
        shutil.copyfile(onnx, home / onnx.name)  # rembg loads dis_custom only from REMBG_HOME
    matteflow = [str(Path(sys.executable).parent / "matteflow"), "run", "--manifest",
                 str(folder / "*.jpg"), "--output", str(args.work / "out-matteflow"),
                 *(a for s in args.settings for a in ("--set", s))]  # fmt: skip
    rembg = [str(args.rembg_venv / "bin" / "rembg"), "p", "-m", "dis_custom", "-x",
             json.dumps({"model_path": str(home / onnx.name)}), str(folder),
             str(args.work / "out-rembg")]  # fmt: skip
    rembg_env = {"REMBG_HOME": str(home), "PATH": "/usr/bin:/bin", "HOME": str(args.work)}
    print(
        f"{len(photos)} photos of {megapixels / 1e6:.2f} MP (JPEG) in {folder};"
        f" settings {args.settings or 'default'}; load average {_load()}",
        flush=True,
    )
    runs: dict[str, list[dict]] = {"matteflow": [], "rembg": []}
    for round_ in range(args.rounds):
        for name, command, env, pattern in (
            ("matteflow", matteflow, dict(os.environ), "cutouts/*"),
            ("rembg", rembg, rembg_env, "*.png"),
        ):
            run = _timed(command, env, args.work / f"out-{name}", pattern)
            if run["outputs"] != len(photos):
                raise SystemExit(f"{name} wrote {run['outputs']} of {len(photos)} outputs")
            runs[name].append({**run, "load": _load()})
            print(
                f"round {round_ + 1} {name:<9} {run['seconds']:7.1f} s, first image"
                f" {run['first_image_s']:5.1f} s, peak RSS {run['peak_rss_mb']:5.0f} MB,"
                f" CPU {run['cpu_s']:6.1f} s,"
                f" load {_load()}",
                flush=True,
            )
    best = {name: min(r["seconds"] for r in rs) for name, rs in runs.items()}
    cpu = {name: min(r["cpu_s"] for r in rs) for name, rs in runs.items()}
    ratio, cpu_ratio = best["rembg"] / best["matteflow"], cpu["rembg"] / cpu["matteflow"]
    print(
        f"minimum: matteflow {best['matteflow']:.1f} s ({best['matteflow'] / len(photos):.2f} s"
        f" an image), rembg {best['rembg']:.1f} s; rembg / matteflow = {ratio:.2f}x"
        f" (CPU seconds: {cpu['matteflow']:.1f} vs {cpu['rembg']:.1f}, {cpu_ratio:.2f}x)"
    )
    return {"images": len(photos), "megapixels": megapixels / 1e6, "runs": runs,
            "best_s": best, "ratio": ratio, "best_cpu_s": cpu, "cpu_ratio": cpu_ratio}  # fmt: skip


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


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
