# syntax=docker/dockerfile:1.7
#
# RunPod serverless worker for CP-VTON+ virtual try-on.
#
# Base image: nvidia/cuda:12.8.1-base-ubuntu24.04.
#  * CUDA 12.8 is what the PyTorch cu128 wheels are built for (see TORCH_INDEX_URL below). Its
#    driver floor (R570) is met by RunPod's current GPU hosts, and 12.8 is the first CUDA with
#    Blackwell (RTX 5090, B200) kernels, so the image runs on Ampere/Ada/Hopper and Blackwell alike.
#    The image's NVIDIA_REQUIRE_CUDA makes a host with an older driver refuse to start the
#    container with a clear message instead of failing at the first kernel launch. On RunPod, pick
#    "CUDA 12.8+" in the endpoint's allowed CUDA versions (the .runpod/hub.json does).
#  * The "base" flavour (CUDA runtime only, ~100 MB) rather than "runtime" (~3 GB): the PyTorch
#    wheels ship their own cuBLAS/cuDNN/NCCL, so the larger image would only duplicate them and
#    make every cold start pull gigabytes more.
#  * Ubuntu 24.04 ships Python 3.12, the newest Python that mediapipe 0.10.21 has wheels for.
#  * CUDA 11.8 images are too old: current PyTorch releases publish no cu118 wheels.
#
# Build arguments:
#   BAKE_CHECKPOINTS=1     (default) bake the checkpoints into the image: by default the official
#                          CP-VTON+ files, with download_checkpoints.sh's defaults (a pinned commit
#                          of github.com/sahiljit/cp-vton-plus, each file checked against its git
#                          blob id; research use only). The build fails if they cannot be fetched.
#                          0: do not bake; the worker reads them at run time from CHECKPOINT_DIR
#                          (e.g. /runpod-volume/checkpoints on a network volume). auto: bake what
#                          can be downloaded; an unreachable source is a warning (a file that
#                          fails verification still fails the build).
#   GMM_URL, TOM_URL       other sources for gmm_final.pth / tom_final.pth (empty: the defaults).
#                          For a pre-signed or private URL use the BuildKit secrets `gmm_url` and
#                          `tom_url` instead (build_and_push.sh does): build args are visible in
#                          the image history, secrets are not.
#   GMM_GIT_BLOB, TOM_GIT_BLOB
#                          expected git blob ids (empty: the official files'; none: no check,
#                          for weights of your own).
#   GMM_SHA256, TOM_SHA256 expected hashes (checked when set).
#   Local files: `--build-context local_checkpoints=DIR` with DIR/GMM/gmm_final.pth and
#                DIR/TOM/tom_final.pth bakes those (the stage of that name below is replaced).
#   TORCH_INDEX_URL        the PyTorch wheel index of the CUDA build (default cu128; cu126 for
#                          hosts whose driver predates R570, with a matching BASE_IMAGE).
#   BASE_IMAGE             the CUDA base image of the GPU stages.
#   CPU_BASE_IMAGE         the base image of the CPU flavour's stages (no CUDA).
#
# Targets (the last stage is the default):
#   runtime (default)      the GPU worker: PyTorch on CUDA, OpenVINO on a CPU-only host.
#   cpu                    the CPU flavour (build_and_push.sh --flavour cpu): OpenVINO, MediaPipe,
#                          runpod, numpy, Pillow, OpenCV; no torch, torchvision or CUDA. The
#                          `cpu-export` stage exports the baked checkpoints' OpenVINO IR with
#                          torch once, at build time; only that export (and its record of the
#                          weights' sha256 and random flag) reaches the image. With
#                          BAKE_CHECKPOINTS=0 the worker reads an export prepared on a network
#                          volume (README_RUNPOD.md § CPU flavour).

ARG BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04
ARG CPU_BASE_IMAGE=ubuntu:24.04

# ---------------------------------------------------------------------------------------------
# builder: the Python environment (/opt/venv). pip and its caches stay in this stage.
FROM ${BASE_IMAGE} AS builder
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# torch==2.14.1 on PyPI is the CUDA 13.0 build, which needs an R580 driver that many RunPod hosts
# do not have yet; the cu128 build from PyTorch's own index runs on R570+ and covers Blackwell.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3.12 -m venv /opt/venv
COPY requirements_runpod.txt requirements_mediapipe.txt /tmp/requirements/
# Same two-step install as run.sh: everything from requirements_runpod.txt (torch/torchvision
# first, from the CUDA index, at the versions pinned there), then mediapipe and protobuf with
# --no-deps, because mediapipe's declared requirements cannot be resolved together with runpod's
# (see requirements_mediapipe.txt).
# hadolint ignore=DL3013
RUN pip install --upgrade pip \
    && grep -E '^(torch|torchvision)==' /tmp/requirements/requirements_runpod.txt >/tmp/requirements/torch.txt \
    && pip install --index-url "${TORCH_INDEX_URL}" -r /tmp/requirements/torch.txt \
    && pip install -r /tmp/requirements/requirements_runpod.txt \
    && pip install --no-deps -r /tmp/requirements/requirements_mediapipe.txt \
    && rm -rf /tmp/requirements

# ---------------------------------------------------------------------------------------------
# cpu-builder: the CPU flavour's environment (/opt/venv): requirements_cpu.txt, then mediapipe with
# --no-deps (the same two steps as above, without torch).
FROM ${CPU_BASE_IMAGE} AS cpu-builder
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 python3.12-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH
RUN python3.12 -m venv /opt/venv
COPY requirements_cpu.txt requirements_mediapipe.txt /tmp/requirements/
# hadolint ignore=DL3013
RUN pip install --upgrade pip \
    && pip install -r /tmp/requirements/requirements_cpu.txt \
    && pip install --no-deps -r /tmp/requirements/requirements_mediapipe.txt \
    && rm -rf /tmp/requirements

# ---------------------------------------------------------------------------------------------
# local_checkpoints: replaced by `--build-context local_checkpoints=DIR` to bake local files.
# By default it is just the base image, which has no GMM/ or TOM/ folder: then no --from-dir
# (download_checkpoints.sh refuses a --from-dir without the files instead of downloading).
FROM ${BASE_IMAGE} AS local_checkpoints

# ---------------------------------------------------------------------------------------------
# checkpoints: downloads and verifies the weights into /checkpoints (empty when not baked).
FROM ${BASE_IMAGE} AS checkpoints
ARG DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY download_checkpoints.sh /usr/local/bin/download_checkpoints.sh
ARG BAKE_CHECKPOINTS=1
ARG GMM_URL=""
ARG TOM_URL=""
ARG GMM_GIT_BLOB=""
ARG TOM_GIT_BLOB=""
ARG GMM_SHA256=""
ARG TOM_SHA256=""
# No Python in this stage: download_checkpoints.sh checks the git blob ids (and sha256 when set)
# here; the strict load as CP-VTON+ networks runs in the runtime stage below.
RUN --mount=type=bind,from=local_checkpoints,target=/mnt/local_checkpoints \
    --mount=type=secret,id=gmm_url,required=false \
    --mount=type=secret,id=tom_url,required=false \
    mkdir -p /checkpoints \
    && case "${BAKE_CHECKPOINTS}" in \
         0) echo "BAKE_CHECKPOINTS=0: no checkpoints in the image; set CHECKPOINT_DIR at run time" ;; \
         1|auto) \
           if [ "${BAKE_CHECKPOINTS}" = auto ]; then only_if=--if-configured; else only_if=; fi; \
           if [ -f /run/secrets/gmm_url ]; then export GMM_URL_FILE=/run/secrets/gmm_url; fi; \
           if [ -f /run/secrets/tom_url ]; then export TOM_URL_FILE=/run/secrets/tom_url; fi; \
           set --; \
           if [ -e /mnt/local_checkpoints/GMM ] || [ -e /mnt/local_checkpoints/TOM ]; then \
             set -- --from-dir /mnt/local_checkpoints; fi; \
           CHECKPOINT_DIR=/checkpoints LOAD_CHECK=0 \
           download_checkpoints.sh "$@" ${only_if} ;; \
         *) echo "BAKE_CHECKPOINTS must be 0, 1 or auto (got '${BAKE_CHECKPOINTS}')" >&2; exit 1 ;; \
       esac \
    && rm -f /checkpoints/*/*.part

# ---------------------------------------------------------------------------------------------
# cpu-export: the full environment (torch) exports the baked checkpoints' OpenVINO IR, the person
# parser's and the record of the weights (python -m openvino_backend) into /export; nothing else
# of this stage ships. Without baked weights /export is empty.
FROM builder AS cpu-export
ARG DEBIAN_FRONTEND=noninteractive
# libgl1, libglib2.0-0t64: OpenCV (imported by the preprocessing); libgomp1: torch's OpenMP.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0t64 libgomp1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY cpvton_infer.py networks.py cp_dataset.py grid.png ./
COPY vton_core/ ./vton_core/
COPY vton_preprocess/ ./vton_preprocess/
COPY worker/ ./worker/
COPY openvino_backend/ ./openvino_backend/
COPY --from=checkpoints /checkpoints /app/checkpoints
RUN --mount=type=bind,source=tools/check_checkpoints.py,target=/tmp/check_checkpoints.py \
    mkdir -p /export \
    && if [ -f /app/checkpoints/GMM/gmm_final.pth ]; then \
         for pair in GMM:gmm TOM:tom; do \
           PYTHONPATH=/app python /tmp/check_checkpoints.py "--${pair#*:}" \
             "/app/checkpoints/${pair%%:*}/${pair#*:}_final.pth" || exit 1; \
         done; \
         python -m openvino_backend /app/checkpoints --cache-dir /export; \
       fi

# ---------------------------------------------------------------------------------------------
# cpu: the CPU flavour (--target cpu). The same serving code as `runtime`, no torch, no CUDA.
FROM ${CPU_BASE_IMAGE} AS cpu
ARG DEBIAN_FRONTEND=noninteractive
# The runtime libraries of `runtime` below (OpenCV, MediaPipe's GL runtime, OpenMP).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.12 ca-certificates \
        libgl1 libglib2.0-0t64 libsm6 libxext6 libxrender1 libegl1 libgles2 libgomp1 \
    && rm -rf /var/lib/apt/lists/*
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin worker
COPY --from=cpu-builder /opt/venv /opt/venv
# BACKEND=openvino: the only backend here (BACKEND=torch is refused at start-up, naming why).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/worker \
    MPLCONFIGDIR=/tmp/matplotlib \
    CHECKPOINT_DIR=/app/checkpoints \
    BACKEND=openvino \
    RUNPOD_LOG_LEVEL=WARN
# Fail the build if a system library is missing, or if torch crept into the environment.
RUN python -c "import cv2, mediapipe, numpy, openvino, PIL, runpod; assert 'CPU' in openvino.Core().available_devices" \
    && if python -c "import torch" 2>/dev/null; then echo "torch is installed in the CPU flavour" >&2; exit 1; fi
WORKDIR /app
COPY handler.py cpvton_infer.py networks.py cp_dataset.py grid.png ./
COPY vton_core/ ./vton_core/
COPY vton_preprocess/ ./vton_preprocess/
COPY worker/ ./worker/
COPY openvino_backend/ ./openvino_backend/
COPY test_input.json ./
# The export only: no checkpoint file reaches this image. A baked export must load here, without
# torch (the worker's own start-up check); without one the worker reads CHECKPOINT_DIR's at run time.
COPY --from=cpu-export /export /app/checkpoints/openvino
RUN if [ -f /app/checkpoints/openvino/export.json ]; then \
        python -c "import handler; from worker.settings import Settings; s = Settings.from_env(); handler.check_checkpoints(s); handler.load_model(s)"; \
    fi \
    && python -m compileall -q /app
USER 10001:10001
CMD ["python", "-u", "handler.py"]

# ---------------------------------------------------------------------------------------------
# runtime: what ships. No compiler, no pip cache, no curl.
FROM ${BASE_IMAGE} AS runtime
ARG DEBIAN_FRONTEND=noninteractive
# libgl1, libglib2.0-0t64 (Ubuntu 24.04's name for libglib2.0-0), libsm6, libxext6, libxrender1:
# what the opencv-contrib-python wheel links against. libegl1, libgles2: mediapipe's GL runtime.
# libgomp1: OpenMP for torch's CPU kernels.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3.12 ca-certificates \
        libgl1 libglib2.0-0t64 libsm6 libxext6 libxrender1 libegl1 libgles2 libgomp1 \
    && rm -rf /var/lib/apt/lists/*

# Non-root user "worker" (uid/gid 10001, set numerically in USER below so that a runtime can check
# it is not root without reading /etc/passwd). RunPod serverless runs the image's USER. The code and baked weights stay owned
# by root (read-only for the worker). A network volume at /runpod-volume is typically owned by
# root: the worker can read files written there by a root pod (mode 644, folders 755), but cannot
# write to it; populate the volume from a pod, or make the folder writable for uid 10001.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin worker

COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/home/worker \
    MPLCONFIGDIR=/tmp/matplotlib \
    CHECKPOINT_DIR=/app/checkpoints \
    RUNPOD_LOG_LEVEL=WARN
# RUNPOD_LOG_LEVEL: the runpod SDK's own level, for any line it prints before handler.py routes
# its logger into ours (LOG_LEVEL then decides, and job payloads are never logged: worker/logs.py).

# Fail the build, not the first cold start, if a system library is missing.
RUN python -c "import cv2, mediapipe, numpy, openvino, PIL, runpod, torch, torchvision"

WORKDIR /app
COPY --from=checkpoints /checkpoints /app/checkpoints
# The serving code by name: the entry point, the model, its shared core, the preprocessing and the
# worker package. Training code, tools, benchmarks and tests never ship
# (tests/deploy/test_deploy_docker_and_env.py checks it).
COPY handler.py cpvton_infer.py networks.py cp_dataset.py grid.png ./
COPY vton_core/ ./vton_core/
COPY vton_preprocess/ ./vton_preprocess/
COPY worker/ ./worker/
COPY openvino_backend/ ./openvino_backend/
# The request `python handler.py` runs when started without a job (the SDK's local test mode).
COPY test_input.json ./
# Baked weights must load strictly as the CP-VTON+ networks (the checker is not shipped); then the
# OpenVINO graph is exported next to them (/app/checkpoints/openvino), so that a cold start only
# reads and compiles it. Not baked: the worker exports it on first start into OPENVINO_CACHE_DIR
# (default <CHECKPOINT_DIR>/openvino).
RUN --mount=type=bind,source=tools/check_checkpoints.py,target=/tmp/check_checkpoints.py \
    for pair in GMM:gmm TOM:tom; do \
      f="/app/checkpoints/${pair%%:*}/${pair#*:}_final.pth"; \
      if [ -f "$f" ]; then PYTHONPATH=/app python /tmp/check_checkpoints.py "--${pair#*:}" "$f" || exit 1; fi; \
    done
RUN if [ -f /app/checkpoints/GMM/gmm_final.pth ]; then \
        python -m openvino_backend /app/checkpoints; \
    fi \
    && python -m compileall -q /app

USER 10001:10001
CMD ["python", "-u", "handler.py"]
