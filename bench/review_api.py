"""Decisions per second through the review workbench's API, and what reading them costs.

A benchmark, not a test: it writes a small finished run (tests.pipelines.review_fixtures),
serves it on 127.0.0.1 and posts N decisions from one client and then from two at once; then
it times GET /api/items (the server's incremental DecisionLog) against reading every part file
afresh (read_decisions), the cost a server would pay per request without the log. Ratios only
are comparable between machines.

    .venv/bin/python bench/review_api.py --decisions 300
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for tests.*

from matteflow.pipelines.review import read_decisions
from tests.pipelines.review_fixtures import make_run, running_server

_IDS = ("a", "b", "c", "d", "e")


def _post(url: str, count: int) -> None:
    with httpx.Client(base_url=url) as client:
        for n in range(count):
            body = {"id": _IDS[n % 5], "decision": "accept", "score": 1 + n % 5, "seconds": 1.0}
            client.post("/api/decisions", json=body).raise_for_status()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--decisions", type=int, default=300)
    args = parser.parse_args()
    n = args.decisions
    with tempfile.TemporaryDirectory() as root:
        out = make_run(Path(root))
        with running_server(out) as url:
            start = time.perf_counter()
            _post(url, n)
            one = n / (time.perf_counter() - start)
            threads = [threading.Thread(target=_post, args=(url, n // 2)) for _ in range(2)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            two = 2 * (n // 2) / (time.perf_counter() - start)
            with httpx.Client(base_url=url) as client:
                start = time.perf_counter()
                for _ in range(5):
                    client.get("/api/items").raise_for_status()
                items_s = (time.perf_counter() - start) / 5
        start = time.perf_counter()
        total = len(read_decisions(str(out)))
        fresh_s = time.perf_counter() - start
    print(f"{total} decisions written, one part file each")
    print(f"one client: {one:.0f} decisions/s; two clients: {two:.0f} decisions/s")
    print(
        f"GET /api/items: {items_s * 1e3:.1f} ms; reading every part afresh: {fresh_s * 1e3:.0f} ms"
    )
    print(f"ratio (fresh read / items request): {fresh_s / items_s:.1f}x")


if __name__ == "__main__":
    main()
