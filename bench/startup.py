"""Start-up of `matteflow run`: time to the first image, and how much of it is our own code.

A benchmark, not a test. Alternates, `--rounds` times, fresh processes of this venv's Python:
  (a) `python -c "import torch"`: the floor no code of ours can go under;
  (b) `python -m matteflow run` on one image (`--image`, default the bundled chelsea.jpg) with
      the real model (MATTEFLOW_MODEL_PATH, default ../shared/models), default settings:
      from just before the process starts to the first output file's mtime;
and reports the minimum of each, (b) - (a) as our own code's share, wall and CPU seconds to
exit, peak RSS (the child's own, from wait4) and peak anonymous RSS (sampled: the process's
own memory, without the shared-library pages that RSS counts as the page cache holds them,
which differ between two venvs' copies of torch). With `--baseline PYTHON` (another
checkout's venv, e.g. main's) each round also runs that checkout's matteflow: before and
after, alternated. Then, once each: `python -X importtime` (the packages the run imports, by
cumulative time), a cProfile (wall clock, main thread) of the same run on one in-process
worker, split by phase (CLI, config, preflight, pipeline construction, the image), and a
timeline of a plain run: when each phase starts and ends, on which thread, and when the
first file is written.

    MATTEFLOW_MODEL_PATH=/work/shared/models .venv/bin/python bench/startup.py --rounds 3
    .venv/bin/python bench/startup.py --rounds 5 --baseline ../main/.venv/bin/python \\
        --out out/bench/startup.json

Run it once to warm the model cache (the first run converts the weights to safetensors).
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
Key = tuple[str, int, str]  # pstats' (file, line, function)

# Phases of a run, as functions whose outermost calls' cumulative wall time is the phase's time;
# "inside" phases are part of the one before them (indented in the table).
PHASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("all imports (every phase)", "<frozen importlib._bootstrap>", ("_find_and_load",)),
    ("the whole CLI call (all below)", "pipelines/cli.py", ("main",)),
    ("config (profile, options)", "pipelines/remove_background.py", ("parse_config",)),
    ("preflight", "pipelines/remove_background.py", ("preflight",)),
    ("  weights sha256", "models/weights.py", ("sha256_file",)),
    ("numba (pymatting): cached machine code loaded", "numba/core/caching.py", ("load_overload",)),
    ("pipeline construction", "pipelines/remove_background.py", ("build",)),
    ("pipeline run (to exit)", "apache_beam/pipeline.py", ("run",)),
    ("  model load", "models/registry.py", ("load",)),
    ("    network build and weights read", "models/registry.py", ("build_network",)),
    ("  model forward", "models/registry.py", ("predict",)),
    ("run.json and summary", "pipelines/summary.py", ("write_summary",)),
]


# Run in the child by --timeline: wraps the run's phases with clocks (seconds since the
# process started, from /proc; every thread, no profiler), runs the CLI, prints JSON last.
_TIMELINE = """
import functools, importlib, json, os, sys, threading, time
ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
boot = float(next(l for l in open("/proc/stat") if l.startswith("btime")).split()[1])
t0 = boot + ticks / os.sysconf("SC_CLK_TCK")
marks = [("interpreter and site ready", time.time() - t0, "MainThread")]

def wrap(module, path, label):
    owner = importlib.import_module(module)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start = time.time() - t0
        try:
            return fn(*args, **kwargs)
        finally:
            marks.append((label, start, threading.current_thread().name, time.time() - t0))
    setattr(owner, name, timed)

import matteflow.pipelines.cli as cli
marks.append(("imported: CLI (typer, rich)", time.time() - t0, "MainThread"))
import matteflow.pipelines.remove_background
marks.append(("imported: the job (torch, Beam, transforms)", time.time() - t0, "MainThread"))
for spec in json.loads(sys.argv.pop(1)):
    wrap(*spec)
try:
    cli.main()
except SystemExit:
    pass
print(json.dumps({"t0": t0, "marks": marks}))
"""
# (module, function, label) the timeline wraps; the first call of each is shown.
TIMED = [
    ("matteflow.pipelines.remove_background", "parse_config", "config"),
    ("matteflow.pipelines.remove_background", "preflight", "preflight"),
    ("matteflow.pipelines.remove_background", "build", "pipeline construction"),
    ("apache_beam.pipeline", "Pipeline.run", "Beam run"),
    ("matteflow.transforms.inference", "MatteModelHandler.load_model", "model load (a worker's)"),
    ("matteflow.transforms.decode", "decode", "decode"),
    ("matteflow.models.registry", "LoadedModel.predict", "model forward"),
    ("matteflow.transforms.refine", "refine_matte", "refine"),
    ("matteflow.transforms.write", "render", "encode (render)"),
    ("matteflow.pipelines.summary", "write_summary", "run.json and summary"),
]


def _timeline(env: dict[str, str], image: Path, work: Path) -> list[tuple[str, float, float, str]]:
    """(phase, start, end, thread), seconds since the process started, of one plain run."""
    output = work / "timeline"
    argv = [_venv_python(), "-c", _TIMELINE, json.dumps(TIMED), "run", "--manifest", str(image),
            "--output", str(output), "--force"]  # fmt: skip
    proc = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.splitlines()[-1])
    rows, seen = [], set()
    for label, start, thread, *end in result["marks"]:
        if label not in seen:
            seen.add(label)
            rows.append((label, start, end[0] if end else start, thread))
    first = min(p.stat().st_mtime for p in output.rglob("*.png")) - result["t0"]
    rows.append(("first output file written", first, first, ""))
    return sorted(rows, key=lambda r: r[1])


def _venv_python() -> str:
    return str(ROOT / ".venv" / "bin" / "python")


def _anon_mb(pid: int) -> float:
    """The process's resident anonymous memory (its own heap and tensors; RssFile, the pages of
    shared libraries and mapped files, depends on what the page cache holds)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"^RssAnon:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) / 1024 if match else 0.0


def _timed(argv: list[str], env: dict[str, str], first_file_under: Path | None) -> dict[str, float]:
    """Run argv; wall and CPU seconds to exit, peak RSS (MB, from wait4), peak anonymous RSS
    (sampled every 20 ms) and, when given a folder, seconds from just before the start to the
    first file written below it."""
    started = time.time()
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv, env=env, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL, stderr=err
        )
        anon = 0.0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            anon = max(anon, _anon_mb(proc.pid))
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            message = err.read().decode()[-2000:]
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{message}")
    result = {
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,  # less sensitive than wall to a busy machine
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "peak_anon_mb": anon,
    }
    if first_file_under is not None:
        mtimes = [p.stat().st_mtime for p in first_file_under.rglob("*.png")]
        result["first_image_s"] = min(mtimes) - started
    return result


def _run_argv(image: Path, output: Path, *extra: str) -> list[str]:
    return [*extra, "-m", "matteflow", "run", "--manifest", str(image), "--output", str(output),
            "--force"]  # fmt: skip


def _import_times(
    env: dict[str, str], image: Path, work: Path, top: int
) -> list[tuple[str, float]]:
    """The packages (top-level names: torch, apache_beam, onnx, ...) the run imports, by
    cumulative seconds (each with what it imports), from -X importtime."""
    argv = [_venv_python(), *_run_argv(image, work / "importtime", "-X", "importtime")]
    proc = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| *([\w]+)$", line)
        if match:
            rows.append((match.group(2), int(match.group(1)) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:top]


def _cumulative(stats: dict, match: Callable[[Key], bool]) -> float:
    """Seconds inside the matching functions, outermost calls only."""
    keys = {k for k in stats if match(k)}
    return sum(stats[k][3] for k in keys if not (stats[k][4] and set(stats[k][4]) <= keys))


def _phases(env: dict[str, str], image: Path, work: Path) -> tuple[list[tuple[str, float]], float]:
    """Seconds per phase from a cProfile (wall clock) of one run on one in-process worker
    (every stage on the profiled thread); and the profile's total."""
    prof = work / "startup.prof"
    argv = [
        _venv_python(), "-m", "cProfile", "-o", str(prof), "-m", "matteflow", "run",
        "--manifest", str(image), "--output", str(work / "phases"), "--force",
        "--direct_num_workers=1", "--direct_running_mode=in_memory",
    ]  # fmt: skip
    subprocess.run(argv, env=env, cwd=work, capture_output=True, check=True)
    stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    total = max(v[3] for v in stats.values())
    rows = []
    for name, file, functions in PHASES:
        seconds = _cumulative(
            stats, lambda k, f=file, fs=functions: k[0].endswith(f) and k[2] in fs
        )
        rows.append((name, seconds))
    return rows, total


def _minima(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: min(r[key] for r in runs) for key in runs[0]}


def main() -> None:
    """Alternate the processes, print minima, imports and phases (optionally JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=ROOT / "examples/sample/chelsea.jpg")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--baseline",
        metavar="PYTHON",
        help="also run matteflow with this Python (another checkout's venv: the code before)",
    )
    parser.add_argument("--top", type=int, default=15, help="imports listed")
    parser.add_argument("--no-breakdown", action="store_true", help="skip importtime, cProfile")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    env = dict(os.environ)
    env.setdefault("MATTEFLOW_MODEL_PATH", str((ROOT / "../shared/models").resolve()))
    work = args.work or Path(tempfile.mkdtemp(prefix="matteflow-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    pythons = {"this checkout": _venv_python()}
    if args.baseline:
        pythons["baseline"] = args.baseline
    runs: dict[str, list[dict[str, float]]] = {"import torch": [], **{k: [] for k in pythons}}
    for i in range(args.rounds):
        runs["import torch"].append(_timed([_venv_python(), "-c", "import torch"], env, None))
        for name, python in pythons.items():
            output = work / f"run-{i}"
            shutil.rmtree(output, ignore_errors=True)
            runs[name].append(_timed([python, *_run_argv(args.image, output)], env, output))
    best = {name: _minima(r) for name, r in runs.items()}
    torch_s = best["import torch"]["wall_s"]
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"{args.rounds} rounds, alternated, minima; {args.image.name}; load average {load}")
    print(
        f"(a) python -c 'import torch': {torch_s:.2f} s, CPU {best['import torch']['cpu_s']:.2f} s"
    )
    head = ("matteflow run", "(b) first image", "(c) = (b) - (a)", "exit", "CPU", "RSS", "anon")
    print(
        f"{head[0]:<16} {head[1]:>16} {head[2]:>16} {head[3]:>7} {head[4]:>7} {head[5]:>8}"
        f" {head[6]:>8}"
    )
    for name in pythons:
        b = best[name]
        print(
            f"{name:<16} {b['first_image_s']:>14.2f} s {b['first_image_s'] - torch_s:>14.2f} s"
            f" {b['wall_s']:>5.2f} s {b['cpu_s']:>5.2f} s {b['peak_rss_mb']:>5.0f} MB"
            f" {b['peak_anon_mb']:>5.0f} MB"
        )
    for name, rows in runs.items():
        key = "first_image_s" if name in pythons else "wall_s"
        print(f"  every round, {name}: " + ", ".join(f"{r[key]:.2f}" for r in rows))
    result: dict[str, object] = {"rounds": args.rounds, "image": str(args.image), "runs": runs}
    result["minima"] = best
    if not args.no_breakdown:
        imports = _import_times(env, args.image, work, args.top)
        phases, profiled = _phases(env, args.image, work)
        print(f"\ntop {args.top} packages imported (python -X importtime, cumulative)")
        for name, seconds in imports:
            print(f"{seconds:8.3f} s  {name}")
        print(f"\nphases, cProfile wall clock, one in-process worker (total {profiled:.2f} s)")
        for name, seconds in phases:
            print(f"{seconds:8.3f} s  {name}")
        result.update(imports=imports, phases=phases, profiled_s=profiled)
        timeline = _timeline(env, args.image, work)
        print("\ntimeline of one run, wall clock, every thread (s since the process started)")
        for label, start, end, thread in timeline:
            span = f"{start:6.2f} - {end:6.2f}" if end > start else f"{start:6.2f}         "
            print(f"{span}  {label:<44} {thread}")
        result["timeline"] = timeline
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
