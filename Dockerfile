# llm-usage-exporter: Prometheus exporter for LLM usage and cost.
#
#   docker build -t llm-usage-exporter .
#   docker run --rm -p 9477:9477 -v llm-exporter-data:/data llm-usage-exporter
#
# The default command runs the built-in simulator with auth off, so the image shows data on
# its own; it keeps that simulated state in /data/demo.db. For real traffic pass your own flags, e.g.
#   docker run ... llm-usage-exporter --config.file=/etc/llm-exporter/config.yaml --storage.path=/data/llm-exporter.db
# Every flag can also be set with an LLM_EXPORTER_* environment variable.

# Pinned to an exact patch release (bump on purpose, not by accident).
# Stage 1 builds the wheel, the same one tests/unit/test_wheel.py builds, installs and runs.
FROM python:3.11.12-slim-bookworm AS wheel
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package build needs (see .dockerignore); dependencies are pinned in pyproject.toml.
COPY pyproject.toml MANIFEST.in README.md LICENSE ./
COPY exporter ./exporter
RUN pip wheel --no-deps --wheel-dir /wheels .

# Stage 2 installs that wheel and nothing else from the source tree.
FROM python:3.11.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user with a fixed uid/gid, so volume ownership is predictable.
RUN groupadd --system --gid 10001 exporter \
 && useradd --system --uid 10001 --gid exporter --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin exporter

COPY --from=wheel /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
 && rm -rf /wheels \
 && mkdir -p /data \
 && chown exporter:exporter /data

# State (SQLite: totals and the dedupe window) lives here; mount a volume to keep it.
VOLUME ["/data"]
WORKDIR /data
USER 10001:10001

EXPOSE 9477

# slim has no curl: probe /healthz with the standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9477/healthz', timeout=4).status == 200 else 1)"]

ENTRYPOINT ["llm-usage-exporter"]
CMD ["--simulator.enabled=true", "--web.listen-address=:9477", "--storage.path=/data/demo.db", "--auth.mode=off"]
