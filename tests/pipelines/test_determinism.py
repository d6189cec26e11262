"""The real model in its default precision (bfloat16 where the CPU has it) writes the same
masks and cutouts, byte for byte, whatever runs it: the default run, one or four worker
threads, the portable runner, two processes (issue 17, What to build 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from matteflow.pipelines.remove_background import main
from matteflow.transforms.metrics import read_metrics
from tests.conftest import shrunk_sample

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IMAGES = ["astronaut.jpg", "coffee.jpg", "rocket.jpg", "camera.jpg"]
RUNNERS = {
    "one_worker": ["--direct_num_workers=1"],
    "four_threads": ["--direct_num_workers=4", "--direct_running_mode=multi_threading"],
    "portable": ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"],
    "two_processes": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four sample photos shrunk to 96 px wide."""
    return shrunk_sample(tmp_path_factory.mktemp("determinism"), IMAGES)


def _outputs(manifest: Path, out: Path, runner_args: list[str]) -> dict[str, bytes]:
    argv = ["--manifest", str(manifest), "--output", str(out)]  # the default model and dtype
    assert main([*argv, *runner_args]) == 0
    rows = read_metrics(str(out)).to_pylist()
    assert [r["status"] for r in rows] == ["ok"] * len(IMAGES)
    assert {r["dtype"] for r in rows} <= {"bfloat16", "float32"}
    return {
        str(p.relative_to(out)): p.read_bytes()
        for folder in ("masks", "cutouts")
        for p in sorted((out / folder).rglob("*.png"))
    }


@pytest.fixture(scope="module")
def default_run(manifest: Path, real_weights: None) -> dict[str, bytes]:
    """The reference: a default run (two worker threads here)."""
    return _outputs(manifest, manifest.parent / "default", [])


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_every_runner_writes_the_default_runs_bytes(
    runner: str, manifest: Path, default_run: dict[str, bytes]
) -> None:
    outputs = _outputs(manifest, manifest.parent / runner, RUNNERS[runner])
    assert sorted(outputs) == sorted(default_run) and len(outputs) == 2 * len(IMAGES)
    assert [name for name, data in outputs.items() if data != default_run[name]] == []
