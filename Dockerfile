# syntax=docker/dockerfile:1
#
# One image for every process: the Temporal worker (`evolution worker`), the serving API (`evolution serve`), the
# dashboard (`python -m dashboard.serve`), migrations (`evolution migrate`) and the Kubernetes training Jobs
# (`python -m evolution.training.job_runner <job.json>`). deploy/kubernetes/ picks the command per Deployment.
#
#   docker build -t controlled-evolution:0.1.0 .
#
# Nothing secret is in the image: settings come from the environment at run time (EVOLUTION_*, see
# docs/production.md), and .dockerignore keeps .evolution/ (local keys, SQLite) and any .env out of the context.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------------------------- build stage
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Every dependency ships manylinux wheels for CPython 3.11, so no compiler is needed.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY evolution/ evolution/
COPY workflows/ workflows/
COPY activities/ activities/
COPY workers/ workers/
COPY dashboard/ dashboard/
# A regular (non-editable) install: the image does not need the source tree at run time. The Alembic migrations
# come with it (package data of evolution/registry/migrations/), byte-compiled by pip now, while the root
# filesystem is still writable.
RUN pip install --upgrade pip "setuptools>=69" && pip install .

# -------------------------------------------------------------------------------------------------- runtime stage
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="controlled-evolution" \
      org.opencontainers.image.description="Controlled Evolution: worker, serving API, dashboard and training jobs" \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric UID/GID: Kubernetes can only verify runAsNonRoot against a number.
RUN groupadd --system --gid 10001 evolution \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/evolution --shell /usr/sbin/nologin evolution \
 && mkdir -p /var/lib/evolution \
 && chown 10001:10001 /var/lib/evolution

COPY --from=build /opt/venv /opt/venv

# EVOLUTION_HOME holds logs and the training work dir; in Kubernetes it is an emptyDir (plus the shared PVC at
# $EVOLUTION_HOME/work), so the root filesystem can stay read-only. HOME is the same writable directory for
# libraries that keep caches there (Streamlit, numba, matplotlib).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/evolution \
    EVOLUTION_HOME=/var/lib/evolution

USER 10001:10001
WORKDIR /var/lib/evolution

# serving API, dashboard, worker metrics, worker Temporal SDK metrics, dashboard metrics
EXPOSE 8088 8501 9464 9465 9466

ENTRYPOINT ["evolution"]
CMD ["--help"]
