"""Where a job's time goes on photo-sized images: per-stage time and CPU, top non-model functions.

A benchmark, not a test. Writes `--images` eval-dev images upscaled (Lanczos) to about
`--megapixels` each into `--work` (outside the repository; reused when there), then runs
`matteflow run` on them in this process, on one worker (FnApiRunner, in memory: every stage
runs on the thread that cProfile watches), with default settings (cutout + mask PNG) unless
`--set` says otherwise, and no ground truth (as a user runs it). cProfile's clock is
`time.process_time`, so a function's time is the CPU of the whole process while it ran: the
model's torch threads count in full (core-seconds).

It prints three tables:
  1. per stage, from the Timings every metrics row carries (wall ms per image);
  2. per stage, CPU seconds from the profile (fetch, decode, colour, resize to and from the
     model, the model's forward pass, refine, decontaminate, score, encode, write, the rest);
  3. the top functions by own CPU outside the model's forward pass;
and beside them: time to first image (process start to the first output file, under the
profiler), peak RSS, wall and CPU seconds of the run.

    .venv/bin/python bench/profile.py --images 6 --megapixels 2.5 --work /tmp/matteflow-bench
    .venv/bin/python bench/profile.py --images 3 --megapixels 12 --work /tmp/matteflow-bench \
        --stats out/bench/profile-12mp.prof
"""

from __future__ import annotations

import time

_STARTED = time.time()  # before the imports: time to first image counts them

import argparse  # noqa: E402
import csv  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

# This file is named profile.py, and cProfile imports the standard library's `profile`: keep
# this folder off the path while it does.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
import cProfile  # noqa: E402
import pstats  # noqa: E402

sys.path.insert(0, str(_HERE))
from photos import upscaled  # noqa: E402

Key = tuple[str, int, str]  # pstats' (file, line, function)

STAGE_COLUMNS = ("fetch_ms", "decode_ms", "infer_ms", "refine_ms", "score_ms", "encode_ms",
                 "write_ms")  # fmt: skip


def _is(path_part: str, *names: str) -> Callable[[Key], bool]:
    return lambda key: key[0].endswith(path_part) and key[2] in names


def _model_forward(key: Key) -> bool:
    """A model's forward pass (LoadedModel.predict, native or onnxruntime, and __call__)."""
    return _is("models/registry.py", "predict", "__call__")(key)


# Profile stages: (name, functions whose cumulative CPU it is, stages already inside it).
_STAGES: list[tuple[str, Callable[[Key], bool], tuple[str, ...]]] = [
    ("fetch (Reader.read)", _is("transforms/reader.py", "read"), ()),
    ("colour (to sRGB)", _is("transforms/colour.py", "to_srgb_rgb", "wide_to_srgb"), ()),
    ("decode (less colour)", _is("transforms/decode.py", "decode"), ("colour (to sRGB)",)),
    ("resize to model (preprocess)", _is("transforms/inference.py", "preprocess"), ()),
    ("model forward", _model_forward, ()),
    ("uncertainty", _is("transforms/matte.py", "uncertainty"), ()),
    ("resize to image (postprocess)", _is("transforms/inference.py", "postprocess"), ()),
    ("decontaminate", _is("transforms/foreground.py", "decontaminate"), ()),
    ("refine (less decontaminate)", _is("transforms/refine.py", "process"), ("decontaminate",)),
    ("score", _is("transforms/score.py", "process"), ()),
    ("encode (render)", _is("transforms/write.py", "render"), ()),
    ("write (files, resume)", _is("transforms/write.py", "process"), ("encode (render)",)),
]


def _cumulative(stats: dict, match: Callable[[Key], bool]) -> float:
    """CPU seconds inside the matching functions (outermost calls only, so recursion and
    nesting between them count once)."""
    keys = {k for k in stats if match(k)}
    # a call of a matching function made from another matching one is inside it already
    return sum(stats[k][3] for k in keys if not (stats[k][4] and set(stats[k][4]) <= keys))


def _model_only(stats: dict) -> set[Key]:
    """The functions called only from within the model's forward pass: those below it in the
    call graph none of whose callers is outside it (so that torch functions that
    preprocessing or loading call too stay outside)."""
    children: dict[Key, set[Key]] = {}
    for key, value in stats.items():
        for caller in value[4]:
            children.setdefault(caller, set()).add(key)
    roots = {k for k in stats if _model_forward(k)}
    inside, todo = set(roots), list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in inside:
                inside.add(child)
                todo.append(child)
    shrank = True
    while shrank:
        leaving = {k for k in inside - roots if not set(stats[k][4]) <= inside}
        inside -= leaving
        shrank = bool(leaving)
    return inside


def _name(key: Key) -> str:
    file, line, func = key
    if file == "~":
        return func
    parts = Path(file).parts
    short = "/".join(parts[-2:]) if "site-packages" not in parts else "/".join(parts[-3:])
    return f"{short}:{line} {func}"


def _stage_table(output: Path) -> tuple[list[str], int]:
    import pyarrow.parquet as pq

    table = pq.read_table(sorted(str(p) for p in (output / "metrics").glob("*.parquet")))
    rows = table.num_rows
    means = {}
    for column in STAGE_COLUMNS:
        values = [v for v in table.column(column).to_pylist() if v is not None]
        means[column] = sum(values) / rows if values else 0.0
    total = sum(means.values()) or 1.0
    lines = [f"{'stage':<12} {'ms/image':>10} {'share':>7}"]
    lines += [
        f"{c.removesuffix('_ms'):<12} {means[c]:>10.0f} {means[c] / total:>7.1%}"
        for c in STAGE_COLUMNS
    ]
    lines.append(f"{'total':<12} {total:>10.0f} {1:>7.0%}")
    return lines, rows


def main() -> None:
    """Upscale, run under cProfile, print the tables (and optionally save them as JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/eval-dev"))
    parser.add_argument("--images", type=int, default=6)
    parser.add_argument("--megapixels", type=float, default=2.5)
    parser.add_argument("--work", type=Path, default=Path("/tmp/matteflow-bench"))
    parser.add_argument(
        "--set", dest="settings", action="append", default=[], metavar="TABLE.KEY=VALUE"
    )
    parser.add_argument("--top", type=int, default=25, help="functions in table 3")
    parser.add_argument("--stats", type=Path, help="save the raw profile here (pstats)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    photos = upscaled(
        args.data, args.images, args.megapixels, args.work / f"{args.megapixels:g}mp-{args.images}"
    )
    megapixels = sum(_size(p) for p in photos) / len(photos) / 1e6
    run_dir = args.work / f"profile-{args.megapixels:g}mp-{args.images}"
    manifest = run_dir / "manifest.csv"
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with manifest.open("w", newline="") as f:
        csv.writer(f).writerows([("id", "uri"), *((p.stem, str(p)) for p in photos)])
    output = run_dir / "out"
    argv = ["--manifest", str(manifest), "--output", str(output), "--force"]
    argv += [a for s in args.settings for a in ("--set", s)]
    argv += ["--direct_num_workers=1", "--direct_running_mode=in_memory"]

    from matteflow.pipelines.remove_background import main as run

    wall, cpu = time.perf_counter(), time.process_time()
    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    code = run(argv)
    profiler.disable()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if code != 0:
        raise SystemExit(f"matteflow run exited {code}")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    first = min(p.stat().st_mtime for p in output.glob("cutouts/*")) - _STARTED

    stage_lines, rows = _stage_table(output)
    buffer = io.StringIO()
    stats = pstats.Stats(profiler, stream=buffer).stats  # type: ignore[attr-defined]
    if args.stats:
        args.stats.parent.mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(args.stats)
    cpu_by_stage: dict[str, float] = {}
    for name, match, inner in _STAGES:
        cpu_by_stage[name] = _cumulative(stats, match) - sum(cpu_by_stage[i] for i in inner)
    cpu_by_stage["rest (start-up, Beam, metrics, summary)"] = cpu - sum(cpu_by_stage.values())
    model_only = _model_only(stats)
    outside = sorted(((v[2], k) for k, v in stats.items() if k not in model_only), reverse=True)[
        : args.top
    ]

    print(
        f"{rows} images of {megapixels:.2f} MP (JPEG), one worker in process, settings"
        f" {args.settings or 'default'}; load average {_load()}"
    )
    print(
        f"wall {wall:.1f} s, CPU {cpu:.1f} s ({cpu / rows:.2f} s an image); time to first"
        f" image {first:.1f} s (under the profiler); peak RSS {peak_mb:.0f} MB\n"
    )
    print("1. per stage, wall time from the metrics rows' Timings")
    print("\n".join(stage_lines))
    print("\n2. per stage, CPU seconds from the profile (all threads of the process)")
    print(f"{'stage':<40} {'s/image':>8} {'share':>7}")
    for name, seconds in cpu_by_stage.items():
        print(f"{name:<40} {seconds / rows:>8.3f} {seconds / cpu:>7.1%}")
    non_model = cpu - cpu_by_stage["model forward"]
    print(f"{'outside the model':<40} {non_model / rows:>8.3f} {non_model / cpu:>7.1%}")
    print(f"\n3. top {args.top} functions by own CPU, outside the model's forward pass")
    print(f"{'s/image':>8} {'share':>7} {'calls':>8}  function")
    for own, key in outside:
        print(f"{own / rows:>8.3f} {own / cpu:>7.1%} {stats[key][1]:>8}  {_name(key)}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = {
            "images": rows, "megapixels": megapixels, "settings": args.settings,
            "wall_s": wall, "cpu_s": cpu, "first_image_s": first, "peak_rss_mb": peak_mb,
            "cpu_s_by_stage": cpu_by_stage,
            "top_outside_model": [(_name(k), own) for own, k in outside],
        }  # fmt: skip
        args.out.write_text(json.dumps(result, indent=2))


def _size(path: Path) -> int:
    from PIL import Image

    with Image.open(path) as img:
        return img.width * img.height


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


if __name__ == "__main__":
    main()
