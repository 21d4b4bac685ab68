# avmon worker (also `avmon init` and `avmon router` in docker-compose.yml).
# Build from the repository root:
#   docker build -f infra/docker/worker.Dockerfile -t avmon-worker .
# The wheels of PyAV (with FFmpeg), NumPy and OpenCV are manylinux_2_28: Debian bookworm's glibc
# 2.36 runs them, no compiler needed.

FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python -m venv /opt/avmon
ENV PATH=/opt/avmon/bin:$PATH
WORKDIR /src

# Dependencies first, in their own layer: a source change does not reinstall PyAV, NumPy and
# OpenCV. With only pyproject.toml present the project has no packages yet; installing it pulls
# exactly its locked dependencies, then the empty project is removed again.
COPY pyproject.toml constraints.txt README.md* ./
RUN pip install --no-cache-dir -c constraints.txt . \
 && pip uninstall --yes avmon \
 && rm -rf build ./*.egg-info

# The project itself (.dockerignore admits only what the package needs). The import check runs
# against the installed package (-P: not the sources in the working directory).
COPY . .
RUN pip install --no-cache-dir --no-deps -c constraints.txt . \
 && python -P -c "import avmon.cli, worker.main, shared.settings"


FROM python:3.11-slim-bookworm
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only on ECS (bytecode was compiled at
# install time).
ENV PATH=/opt/avmon/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

# A fixed numeric uid (the ECS task definition runs as 10001:10001 too). Home is /tmp: the only
# writable place once the root filesystem is read-only. /tmp is owned by the user because a Fargate
# bind mount takes its owner from the image's directory (root and 0755 otherwise).
RUN groupadd --system --gid 10001 avmon \
 && useradd --system --uid 10001 --gid avmon --home-dir /tmp --no-create-home \
            --shell /usr/sbin/nologin avmon \
 && chown avmon:avmon /tmp \
 && chmod 1777 /tmp
VOLUME ["/tmp"]

COPY --from=build /opt/avmon /opt/avmon

USER 10001:10001
WORKDIR /tmp

# `avmon health` exits 0 while the worker loop's heartbeat is fresh. (ECS uses the task
# definition's own health check; this one serves `docker run` and compose.)
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 CMD ["avmon", "health"]

# Exec form, no shell and no init: `avmon worker` is PID 1 and receives SIGTERM itself (it installs
# its own handler; ECS sends SIGKILL 30 s later).
CMD ["avmon", "worker"]
