# CUDA PyTorch base with the project's requirements. Build: make/docker_build; run: make/shell_docker.
FROM pytorch/pytorch:2.11.0-cuda13.0-cudnn9-runtime
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1
RUN apt-get update && apt-get install -y --no-install-recommends \
        libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 git ffmpeg && \
    rm -rf /var/lib/apt/lists/*
COPY requirements.txt /tmp/requirements.txt
# torch/torchvision come with the base image; install the rest.
RUN grep -vE '^(torch|torchvision)==' /tmp/requirements.txt > /tmp/req-notorch.txt && \
    pip install --no-cache-dir -r /tmp/req-notorch.txt
WORKDIR /workspace/project
ENV PROJECT_DN=/workspace/project PYTHONPATH=/workspace/project
