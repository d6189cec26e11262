"""Torch threads and inference determinism: do alphas depend on the thread count, and which
policy is faster on this machine.

A benchmark, not a test. Part 1 runs the model on a few images at 1, 2 and 4 torch threads
(set in the calling thread) and prints, per pair, how many 8-bit mask pixels differ and by how
much at most. Part 2 times the two policies for several worker threads sharing one model:
every worker thread sets the thread count itself before its forward pass (`per_call`), or the
worker threads hand their batches to one inference thread that owns the model (`one_thread`);
printed as images per second and as a ratio to the first.

    .venv/bin/python bench/thread_policy.py --images examples/sample/astronaut.jpg \\
        examples/sample/coffee.jpg --workers 2 --threads 1,2
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from matteflow.models.registry import LoadedModel, load
from matteflow.models.threads import torch_threads
from matteflow.transforms.inference import postprocess, preprocess


def _mask(model: LoadedModel, rgb: np.ndarray) -> np.ndarray:
    alpha = model(preprocess(rgb, model.spec, model.device)[None])[0]
    return np.asarray(np.rint(postprocess(alpha, *rgb.shape[:2]) * 255), dtype=np.uint8)


def _determinism(model: LoadedModel, images: list[np.ndarray]) -> None:
    masks = {}
    for n in (1, 2, 4):
        with torch_threads(n):
            masks[n] = [_mask(model, rgb) for rgb in images]
    for a, b in ((1, 2), (1, 4), (2, 4)):
        diffs = [
            np.abs(x.astype(int) - y.astype(int)) for x, y in zip(masks[a], masks[b], strict=True)
        ]
        changed = sum(int((d > 0).sum()) for d in diffs)
        worst = max(int(d.max()) for d in diffs)
        print(f"threads {a} vs {b}: {changed} mask pixels differ, max {worst}/255")


def _per_call(model: LoadedModel, images: list[np.ndarray], workers: int, threads: int) -> None:
    def work(rgb: np.ndarray) -> np.ndarray:
        with torch_threads(threads):
            return _mask(model, rgb)

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, images))


def _one_thread(model: LoadedModel, images: list[np.ndarray], workers: int, threads: int) -> None:
    jobs: queue.Queue[tuple[np.ndarray, Future[np.ndarray]] | None] = queue.Queue()

    def owner() -> None:
        torch.set_num_threads(threads)
        while (job := jobs.get()) is not None:
            job[1].set_result(_mask(model, job[0]))

    thread = threading.Thread(target=owner)
    thread.start()

    def work(rgb: np.ndarray) -> np.ndarray:
        done: Future[np.ndarray] = Future()
        jobs.put((rgb, done))
        return done.result()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(work, images))
    jobs.put(None)
    thread.join()


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", nargs="+", type=Path, required=True)
    parser.add_argument("--model", default="isnet-general-use")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--workers", type=int, default=2, help="worker threads sharing the model")
    parser.add_argument("--threads", default="1,2", help="torch threads per forward pass, a list")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes over the images")
    args = parser.parse_args()
    model = load(args.model, "cpu", args.dtype)
    images = [np.asarray(Image.open(p).convert("RGB")) for p in args.images]
    print(f"{args.model} {model.dtype_name}, {len(images)} images")
    _determinism(model, images)
    base = None
    for threads in map(int, args.threads.split(",")):
        for name, policy in (("per_call", _per_call), ("one_thread", _one_thread)):
            policy(model, images[:1], 1, threads)  # warm-up
            start = time.perf_counter()
            for _ in range(args.repeat):
                policy(model, images, args.workers, threads)
            rate = args.repeat * len(images) / (time.perf_counter() - start)
            base = base or rate
            print(
                f"{name}: {args.workers} workers x {threads} torch threads:"
                f" {rate:.3f} images/s ({rate / base:.2f}x)"
            )


if __name__ == "__main__":
    main()
