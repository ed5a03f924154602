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

# The virtualenv /opt/metamapper of each role, by the one definition in
# docker/virtualenv.py: without pip (the build base's pip installs into it), from wheels only
# (a dependency without one fails the build instead of compiling), without the dependencies'
# test suites, their shared objects stripped (binutils' strip, installed here when the base
# lacks it), with bytecode for exactly what the role imports until it is ready. The
# dependencies come first, in a layer that only pyproject.toml and the script invalidate.
FROM ${PYTHON_IMAGE} AS venv
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN command -v strip >/dev/null || { apt-get update \
 && apt-get install --yes --no-install-recommends binutils && rm -rf /var/lib/apt/lists/*; }
COPY --from=requirements /src/requirements-worker.txt /src/requirements-operator.txt /tmp/
COPY docker/virtualenv.py /usr/local/lib/virtualenv.py

FROM venv AS venv-worker
RUN python /usr/local/lib/virtualenv.py dependencies worker
COPY --from=wheel /wheels /wheels
RUN python /usr/local/lib/virtualenv.py project worker

FROM venv AS venv-operator
RUN python /usr/local/lib/virtualenv.py dependencies operator
COPY --from=wheel /wheels /wheels
RUN python /usr/local/lib/virtualenv.py project operator

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
