# matteflow worker image: Beam's Python 3.11 SDK container with the CUDA build of torch, this
# package and the model's verified weights. The same image serves as Dataflow's
# --sdk_container_image and as a Flex Template's launcher (README: "Distributed runs").
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/matteflow-worker:0.1.0 \
#       --build-context weights=../shared/models .
#
# The `weights` build context is any folder holding isnet-general-use-fp16.onnx: the build
# checks its sha256 against configs/models.toml and converts it; a wrong file fails the build.
# For CPU workers (Flink, Spark): --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu

# Same Beam and Python as pyproject.toml: the SDK harness in the image runs the job's code.
FROM apache/beam_python3.11_sdk:2.77.0 AS base

# A Flex Template launcher in the same image (the launcher runs FLEX_TEMPLATE_PYTHON_PY_FILE).
COPY --from=gcr.io/dataflow-templates-base/python311-template-launcher-base:latest \
    /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

# torch as pinned in pyproject.toml, from PyTorch's CUDA index: its wheels bring their CUDA
# libraries; the driver comes from Dataflow (worker_accelerator ... install-nvidia-driver).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
RUN pip install --no-cache-dir "torch==2.13.0" --index-url "${TORCH_INDEX}"

# The package with its pinned dependencies (torch is already satisfied: 2.13.0+cu128 matches
# ==2.13.0) and Beam's GCP extra, which DataflowRunner needs in a Flex launcher.
WORKDIR /opt/matteflow
COPY pyproject.toml README.md ./
COPY matteflow matteflow
COPY pipelines pipelines
COPY transforms transforms
COPY models models
COPY configs configs
RUN pip install --no-cache-dir ".[dataflow]" && pip check
# Compile decontamination's numba code (pymatting's estimator, our per-pixel correction for 8-
# and 16-bit colour) into their caches now: a worker that compiled them on first use would pay
# ~45 s per process.
RUN python -c "import numpy as np; from matteflow.transforms.foreground import decontaminate; \
    [decontaminate(np.zeros((4, 4, 3), t), np.full((4, 4), 0.5, np.float32)) \
     for t in (np.uint8, np.uint16)]"

# Weights: fetched from the build context as a mirror, sha256-verified, converted once to
# safetensors in the cache that workers read. Nothing is downloaded at job start.
ENV MATTEFLOW_CACHE_DIR=/opt/matteflow/cache
RUN --mount=type=bind,from=weights,target=/weights \
    MATTEFLOW_MODEL_MIRRORS=/weights matteflow models fetch isnet-general-use \
    && matteflow models verify isnet-general-use \
    && chmod -R a+rX /opt/matteflow/cache

# Flex Template entry: the same `main` as `matteflow run` (parameters arrive as --name=value).
RUN printf 'import sys\nfrom matteflow.pipelines.remove_background import main\nsys.exit(main(sys.argv[1:]))\n' \
    > /opt/matteflow/launch.py
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/opt/matteflow/launch.py

# The HTTP service (`matteflow serve`, README "Run it as a service"): the same image, serving.
#   docker build --target serve -t matteflow-serve --build-context weights=../shared/models .
#   docker run -p 8000:8000 -e MATTEFLOW_API_TOKEN=... -e MATTEFLOW_WEBHOOK_SECRET=... \
#       matteflow-serve
# It binds 0.0.0.0 inside the container, so it refuses to start without MATTEFLOW_API_TOKEN.
FROM base AS serve
EXPOSE 8000
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
ENTRYPOINT ["matteflow", "serve", "--host", "0.0.0.0", "--port", "8000"]

# The worker image (the default target, built last): Beam's SDK harness stays the entrypoint
# for workers; the Flex launcher is started by Dataflow.
FROM base AS worker
ENTRYPOINT ["/opt/apache/beam/boot"]
