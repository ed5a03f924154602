# syntax=docker/dockerfile:1.7
#
# Two images from one file, both non-root and without compilers:
#   docker build --target worker   -t metamapper-worker .    (the default target)
#   docker build --target operator -t metamapper-operator .
#
# Both have the `metamapper` entrypoint: worker | scheduler | operator | migrate |
# health | shell | datastores | runs | revisions | inspect, or any other program.
# Pin the base image by digest too when you publish (python:3.11.14-slim-bookworm@sha256:...).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: the project's wheel, then one virtualenv per image, from wheels only -----
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY tasks/ tasks/
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE} AS venv-worker
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY --from=wheel /wheels /wheels
# --only-binary: a dependency without a wheel fails the build instead of compiling.
RUN python -m venv /opt/metamapper \
 && /opt/metamapper/bin/pip install --only-binary=:all: "$(echo /wheels/*.whl)[worker]"

FROM ${PYTHON_IMAGE} AS venv-operator
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY --from=wheel /wheels /wheels
RUN python -m venv /opt/metamapper \
 && /opt/metamapper/bin/pip install --only-binary=:all: "$(echo /wheels/*.whl)[operator]"

# --- runtime ---------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 metamapper \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/metamapper \
      --shell /usr/sbin/nologin metamapper
# METAMAPPER_HOME holds the embedded SQLite metastore when METAMAPPER_DATABASE_URL is unset;
# the scheduler keeps celery beat's schedule file in /tmp (METAMAPPER_BEAT_SCHEDULE).
ENV PATH=/opt/metamapper/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    METAMAPPER_HOME=/home/metamapper \
    METAMAPPER_CELERY_CONFIG_MODULE=metamapper.celeryconfig
WORKDIR /home/metamapper
# Numeric, so that Kubernetes can verify runAsNonRoot.
USER 10001:10001
# SIGTERM: Celery's warm shutdown (running tasks finish, then the worker exits).
STOPSIGNAL SIGTERM

FROM runtime AS operator
COPY --from=venv-operator /opt/metamapper /opt/metamapper
ENTRYPOINT ["metamapper"]
CMD ["operator"]

FROM runtime AS worker
COPY --from=venv-worker /opt/metamapper /opt/metamapper
ENTRYPOINT ["metamapper"]
CMD ["worker"]
