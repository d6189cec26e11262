"""The CPU thread rule every inference engine follows, so that a forward pass computes the same
numbers whichever worker thread, process or runner executes it (issue 17).

A reduced-precision CPU kernel (bfloat16 under oneDNN) splits its reductions by the number of
threads it runs on, so the thread count is part of what decides an alpha. torch keeps that
count per OS thread (OpenMP's), and Beam runs a model on whichever worker thread holds the
bundle: a count set once at load time reaches only the loading thread. Every engine therefore
asks `inference_threads` for the count and sets it in the thread that runs the forward pass,
per call (`torch_threads`, or the engine's own session option for onnxruntime).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["inference_threads", "torch_threads"]


def inference_threads(requested: int = 0) -> int:
    """Intra-op threads for every forward pass: `requested` when positive, else 1.

    Never derived from the cores or the number of workers, so one, four or sixteen worker
    threads, two processes, a portable runner or a larger machine compute the same numbers.
    One is the default because the runner's worker threads already keep the cores busy (one
    Beam worker thread per core locally, many per SDK harness): on this 2-core machine, two
    worker threads x 1 torch thread ran the real model 1.28x as fast as 2 x 2 (bench/
    thread_policy.py), and a single-threaded pass never waits on a descheduled sibling.
    """
    return requested if requested > 0 else 1


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the body with torch's intra-op thread count at `count` in the calling thread, and
    restore the thread's previous count after."""
    previous = torch.get_num_threads()
    if previous != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
