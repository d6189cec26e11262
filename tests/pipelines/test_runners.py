"""Profiles for distributed runners (issue 9): every profile parses, and the job's graph builds
and translates to a portable pipeline under the Flink, Spark and Dataflow profiles' options.

Their job servers and Dataflow cannot be reached here, so nothing is submitted: the checks stop
at what the launcher does before it talks to a service.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import (
    DebugOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
    WorkerOptions,
)
from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
from apache_beam.runners.direct.direct_runner import DirectRunner
from apache_beam.runners.portability import portable_runner
from apache_beam.runners.portability.flink_runner import FlinkRunner
from apache_beam.runners.portability.portable_runner import PortableRunner
from apache_beam.runners.portability.spark_runner import SparkRunner
from apache_beam.runners.runner import create_runner
from apache_beam.transforms.environments import DockerEnvironment, python_sdk_dependencies

from matteflow.pipelines.config import RunConfig, load_config
from matteflow.pipelines.options import MatteflowOptions, RunnerKind
from matteflow.pipelines.remove_background import build, run
from matteflow.transforms.arrivals import ReadArrivals
from tests.conftest import REPO
from tests.images import encode, pattern

CONFIGS = REPO / "configs"
PROFILES = sorted(p.name for p in CONFIGS.glob("*.toml") if p.name != "models.toml")
WORKER_IMAGE = "us-docker.pkg.dev/my-project/matteflow/worker:0.1.0"
DATAFLOW = [
    "--project=my-project",
    "--region=us-central1",
    "--temp_location=gs://matteflow-staging/tmp",
    f"--sdk_container_image={WORKER_IMAGE}",
]


def _profile(name: str, tmp_path: Path, argv: list[str]) -> tuple[RunConfig, PipelineOptions]:
    """The profile's config (tiny model), and Beam options as run() makes them."""
    cfg = load_config(
        str(CONFIGS / name),
        manifest="gs://photos/incoming/**.jpg",
        output=str(tmp_path / "out"),
        model="tiny-isnet",
    )
    return cfg, PipelineOptions([*cfg.beam.args, *argv])


def _images(proto: beam_runner_api_pb2.Pipeline) -> set[str]:
    """Container images of the environments that the pipeline's transforms run in."""
    used = {t.environment_id for t in proto.components.transforms.values() if t.environment_id}
    images = set()
    for env_id in used:
        env = proto.components.environments[env_id]
        assert env.urn == common_urns.environments.DOCKER.urn, env_id
        payload = beam_runner_api_pb2.DockerPayload.FromString(env.payload)
        images.add(payload.container_image)
    return images


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_parses(name: str) -> None:
    cfg = load_config(str(CONFIGS / name))
    assert all(arg.startswith("--") for arg in cfg.beam.args)


@pytest.mark.parametrize(
    ("name", "runner_class", "streaming"),
    [
        ("flink.toml", FlinkRunner, False),
        ("flink.toml", FlinkRunner, True),
        ("spark.toml", SparkRunner, False),
    ],
)
def test_flink_and_spark_profiles_build_a_valid_portable_pipeline(
    name: str, runner_class: type, streaming: bool, tmp_path: Path
) -> None:
    argv = ["--environment_config=registry.example/matteflow-worker:0.1.0"]
    cfg, options = _profile(name, tmp_path, [*argv, *(["--streaming"] if streaming else [])])
    runner = create_runner(options.view_as(StandardOptions).runner)
    assert isinstance(runner, runner_class)
    assert options.view_as(PortableOptions).environment_type == "DOCKER"

    p = beam.Pipeline(runner=runner, options=options)  # raises on invalid options
    arrivals = ReadArrivals(cfg.manifest, cfg.streaming) if streaming else None
    outputs = build(p, cfg, arrivals)
    assert outputs.rows.is_bounded is not streaming

    proto = p.to_runner_api(default_environment=PortableRunner._create_environment(options))
    assert _images(proto) == {"registry.example/matteflow-worker:0.1.0"}
    labels = {t.unique_name for t in proto.components.transforms.values()}
    reader = "ReadArrivals" if streaming else "ReadManifest"
    assert {reader, "FetchAndDecode", "Segment", "WriteOutputs", "WriteMetrics"} <= labels


def test_dataflow_profile_asks_for_one_gpu_worker_per_vm(tmp_path: Path) -> None:
    cfg, options = _profile("dataflow-gpu.toml", tmp_path, DATAFLOW)
    assert (cfg.model.device, cfg.model.dtype) == ("cuda", "bfloat16")
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    worker = options.view_as(WorkerOptions)
    assert (worker.machine_type, worker.disk_size_gb) == ("g2-standard-8", 50)
    assert worker.sdk_container_image == WORKER_IMAGE
    cloud = options.view_as(GoogleCloudOptions)
    accelerator = "worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver"
    assert cloud.dataflow_service_options == [accelerator]
    experiments = options.view_as(DebugOptions).experiments
    assert {"use_runner_v2", "no_use_multiple_sdk_containers"} <= set(experiments)
    # The checks DataflowRunner makes of these options before it calls the service (the rest
    # of its validation looks the temp bucket up on GCS).
    validator = PipelineOptionsValidator(options, DataflowRunner())
    assert validator.validate_cloud_options(cloud) == []
    assert validator.validate_worker_region_zone(worker) == []


@pytest.mark.parametrize("streaming", [False, True])
def test_dataflow_profile_builds_the_batch_and_the_pubsub_graph(
    streaming: bool, tmp_path: Path
) -> None:
    argv = [*DATAFLOW, *(["--streaming"] if streaming else [])]
    cfg, options = _profile("dataflow-gpu.toml", tmp_path, argv)
    # A local runner: DataflowRunner's own validation would look the temp bucket up on GCS.
    p = beam.Pipeline(runner=DirectRunner(), options=options)
    subscription = "projects/my-project/subscriptions/uploads"
    arrivals = ReadArrivals(cfg.manifest, cfg.streaming, subscription) if streaming else None
    build(p, cfg, arrivals)

    # The worker environment as DataflowRunner makes it: the image, with no SDK or package to
    # stage (only Beam's record of the launcher's installed packages).
    artifacts = python_sdk_dependencies(options)
    staged = {
        beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(a.role_payload).staged_name
        for a in artifacts
    }
    assert staged <= {"submission_environment_dependencies.txt"}
    image = options.view_as(WorkerOptions).sdk_container_image
    env = DockerEnvironment.from_container_image(image, artifacts=artifacts)
    proto = p.to_runner_api(default_environment=env)
    assert _images(proto) == {WORKER_IMAGE}
    names = {t.unique_name for t in proto.components.transforms.values()}
    assert ("ReadArrivals/Notifications" in names) is streaming


def test_a_profiles_beam_args_choose_the_runner_and_the_command_line_wins(
    tmp_path: Path,
) -> None:
    profile = tmp_path / "portable.toml"
    args = ["--runner=PortableRunner", "--job_endpoint=embed", "--environment_type=LOOPBACK"]
    profile.write_text(f"[beam]\nargs = {args!r}\n".replace("'", '"'))
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(encode(pattern(), "PNG"))
    argv = ["--profile", str(profile), "--manifest", str(tmp_path / "images" / "*.png")]
    argv += ["--output", str(tmp_path / "out"), "--model", "tiny-isnet"]

    assert isinstance(run(argv), portable_runner.PipelineResult)
    assert not isinstance(run([*argv, "--runner=FnApiRunner"]), portable_runner.PipelineResult)
    assert json.loads((tmp_path / "out" / "run.json").read_text())["counts"]["ok"] == 0  # resumed


# A value each Flex Template parameter must accept, and one it must refuse.
FLEX_EXAMPLES = {
    "manifest": ("gs://photos/2026-11/manifest.csv", "photos/manifest.csv"),
    "output": ("gs://cutouts/2026-11", "s3://cutouts/2026-11"),
    "profile": ("/opt/matteflow/configs/dataflow-gpu.toml", "configs/dataflow-gpu.toml"),
    "model": ("isnet-general-use", "ISNet General"),
    "set": ("outputs.cutout_format=webp", "webp"),
    "max_failure_rate": ("0.05", "5%"),
    "force": ("true", "yes"),
    "sdk_container_image": (WORKER_IMAGE, "matteflow worker"),
}


def test_flex_template_parameters_are_job_flags_with_working_regexes() -> None:
    metadata = json.loads((CONFIGS / "flex-template-metadata.json").read_text())
    params = {p["name"]: p for p in metadata["parameters"]}
    assert sorted(params) == sorted(FLEX_EXAMPLES)
    for name, (good, bad) in FLEX_EXAMPLES.items():
        (regex,) = params[name]["regexes"]
        assert re.fullmatch(regex, good), name
        assert not re.fullmatch(regex, bad), name
    # As the launcher passes them: --name=value, each one parsed by the job's own options.
    options = PipelineOptions([f"--{name}={good}" for name, (good, _) in FLEX_EXAMPLES.items()])
    flags = options.view_as(MatteflowOptions)
    assert (flags.manifest, flags.force, flags.max_failure_rate) == (
        "gs://photos/2026-11/manifest.csv",
        True,
        0.05,
    )
    assert flags.settings == ["outputs.cutout_format=webp"]
    assert options.view_as(WorkerOptions).sdk_container_image == WORKER_IMAGE


@pytest.mark.parametrize(
    ("flags", "kind"),
    [
        ([], RunnerKind.IN_PROCESS),
        (["--runner=DirectRunner"], RunnerKind.LOCAL),
        (["--runner=FnApiRunner"], RunnerKind.LOCAL),
        (["--runner=PortableRunner", "--environment_type=LOOPBACK"], RunnerKind.LOCAL),
        (["--runner=PortableRunner", "--environment_type=DOCKER"], RunnerKind.REMOTE),
        (["--runner=DataflowRunner"], RunnerKind.REMOTE),
        (["--runner=FlinkRunner"], RunnerKind.REMOTE),
    ],
)
def test_runner_kind_says_where_the_model_runs(flags: list[str], kind: RunnerKind) -> None:
    assert RunnerKind.of(PipelineOptions(flags)) is kind
