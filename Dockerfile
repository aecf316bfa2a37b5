# Propensity API image: the `propensity` CLI and its serving deps in a venv.
#
# Build with `make image` (builds the wheelhouse wheels/ and the base image
# first). The build uses no network: every package comes from wheels/, made
# by `make wheels` from requirements-prod.lock plus the project's own wheel.
# A serving image: the package without its extras (no pandas, scikit-learn,
# statsmodels, scipy, matplotlib, pyarrow, Dask, MLflow client), as workers
# load only the data artifact scorer.json. A command that needs an extra says
# so; training, reports and file scoring run where the extras are installed.
#
#   docker run --network host --read-only --tmpfs /tmp \
#     -v propensity-artifacts:/app/artifacts propensity-api:<tag>
#
# BASE_IMAGE is a pinned tag. On a host that can pull from a registry, pin it
# by digest instead (python:3.11-slim-bookworm@sha256:...). Here the tag is a
# local stand-in built from Debian packages by deploy/docker/build-base-image.sh.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheels
COPY requirements-prod.lock /tmp/requirements-prod.lock
COPY wheels/ /wheels/
# Locked deps first, then the project wheel (its deps must already be satisfied:
# pip check fails the build on any drift between pyproject and the prod lock).
# Then drop pip/setuptools and the packages' test suites (~150 MB). The .pyc
# files stay: with a read-only root each worker would otherwise recompile every
# module at start (measured: import of the stack ~4 s with them, ~9-12 s without).
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /tmp/requirements-prod.lock \
 && /opt/venv/bin/pip install /wheels/propensity_service-*.whl \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/pip uninstall -y pip setuptools \
 && find /opt/venv/lib/python3.11/site-packages -depth -type d \( -name tests -o -name test \) \
      -exec rm -rf {} +

FROM ${BASE_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    VIRTUAL_ENV=/opt/venv \
    PROPENSITY_ARTIFACTS_DIR=/app/artifacts \
    PROMETHEUS_MULTIPROC_DIR=/tmp/metrics \
    PROPENSITY_HOST=0.0.0.0 \
    MPLCONFIGDIR=/tmp/matplotlib \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --gid 10001 propensity \
 && useradd --uid 10001 --gid 10001 --no-log-init --home-dir /app --no-create-home \
      --shell /usr/sbin/nologin propensity \
 && install -d -o 10001 -g 10001 /app/artifacts
COPY --from=builder /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /usr/local/lib/propensity/healthcheck.py
# The approved model, imported on the host by `make image` (the default
# BAKE_MODEL=1; importing takes the training stack, which this image has not).
# A volume mounted over /app/artifacts hides it; an empty named volume is
# seeded from it. BAKE_MODEL=0 leaves the directory empty.
COPY --chown=10001:10001 build/image-artifacts/ /app/artifacts/
WORKDIR /app
USER 10001:10001
VOLUME ["/app/artifacts"]
EXPOSE 1313
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python3", "/usr/local/lib/propensity/healthcheck.py"]
# Exec form: `propensity serve` execs gunicorn, so SIGTERM reaches it and it drains.
ENTRYPOINT ["propensity"]
CMD ["serve"]
