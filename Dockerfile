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
# The runtime's base: the same Python without pip may be given here (the virtualenv links
# to its interpreter, so it must be the same Python at the same path).
ARG RUNTIME_IMAGE=${PYTHON_IMAGE}

# --- build: the dependencies (a layer that only pyproject.toml invalidates), then the
#     project's wheel, installed without dependencies: a code change rebuilds the last step.
FROM ${PYTHON_IMAGE} AS wheel
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY tasks/ tasks/
COPY common/ common/
RUN pip wheel --no-deps --wheel-dir /wheels .

# The pinned requirements of one extra ("worker" or "operator"), read from pyproject.toml.
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /src/
RUN for extra in worker operator; do python -c 'import sys, tomllib; \
project = tomllib.load(open("/src/pyproject.toml", "rb"))["project"]; \
print("\n".join(project["dependencies"] + project["optional-dependencies"][sys.argv[1]]))' \
    "$extra" > "/src/requirements-$extra.txt"; done

# --only-binary: a dependency without a wheel fails the build instead of compiling.
# The virtualenv has no pip of its own (the build base's pip installs into it), so the
# runtime carries no installer; as in the official Python images, no bytecode and no test
# suites of the dependencies (bytecode would be 30 to 40 MB, while compiling what a process
# imports costs it about 1.5 s of CPU when it starts).
FROM ${PYTHON_IMAGE} AS venv-worker
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY --from=requirements /src/requirements-worker.txt /tmp/requirements.txt
RUN python -m venv --without-pip /opt/metamapper \
 && python -m pip --python /opt/metamapper/bin/python install --no-compile \
      --only-binary=:all: -r /tmp/requirements.txt \
 && find /opt/metamapper -depth -type d -path '*/site-packages/*' \
      \( -name test -o -name tests \) -exec rm -rf {} +
COPY --from=wheel /wheels /wheels
RUN python -m pip --python /opt/metamapper/bin/python install --no-compile --no-deps \
      /wheels/*.whl

FROM ${PYTHON_IMAGE} AS venv-operator
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
COPY --from=requirements /src/requirements-operator.txt /tmp/requirements.txt
RUN python -m venv --without-pip /opt/metamapper \
 && python -m pip --python /opt/metamapper/bin/python install --no-compile \
      --only-binary=:all: -r /tmp/requirements.txt \
 && find /opt/metamapper -depth -type d -path '*/site-packages/*' \
      \( -name test -o -name tests \) -exec rm -rf {} +
COPY --from=wheel /wheels /wheels
RUN python -m pip --python /opt/metamapper/bin/python install --no-compile --no-deps \
      /wheels/*.whl

# --- runtime ---------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
RUN groupadd --system --gid 10001 metamapper \
 && useradd --system --uid 10001 --gid 10001 --create-home --home-dir /home/metamapper \
      --shell /usr/sbin/nologin metamapper
# The scheduler keeps celery beat's schedule file in /tmp (METAMAPPER_BEAT_SCHEDULE).
ENV PATH=/opt/metamapper/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    METAMAPPER_CELERY_CONFIG_MODULE=metamapper.conf.celery
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
