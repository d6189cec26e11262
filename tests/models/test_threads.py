"""The thread rule of every engine: one count, set in whichever thread runs the forward pass."""

from __future__ import annotations

import threading

import torch

from matteflow.models import threads
from matteflow.models.threads import inference_threads, torch_threads


def test_all_names_exist() -> None:
    assert all(hasattr(threads, name) for name in threads.__all__)


def test_the_count_is_the_requested_one_else_one() -> None:
    assert inference_threads(0) == 1
    assert inference_threads(3) == 3


def test_the_count_is_set_in_the_calling_thread_and_restored() -> None:
    seen: list[int] = []

    def worker() -> None:  # a thread Beam might run a batch on: torch's default count here
        before = torch.get_num_threads()
        with torch_threads(before + 1):
            seen.append(torch.get_num_threads())
        seen.append(torch.get_num_threads() - before)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [seen[0], 0] and seen[0] >= 2
