# The application image of socialads: the CLI (`socialads train|predict|serve|deploy|lake init`),
# and also the MLflow tracking server and the Prefect server of docker-compose.yaml, so that
# every component runs the exact versions the tests run (constraints.txt).
#
#   docker build -t socialads:0.1.0 .
#
# Python matches the version the test venv uses (3.11); the tag is pinned so that a rebuild
# months later starts from the same interpreter and Debian release.
FROM python:3.11.13-slim-bookworm

# PYTHONDONTWRITEBYTECODE is deliberately NOT set: pip compiles every module at install time,
# which saves a few seconds at each start of mlflow/prefect/socialads (large import trees).
# GIT_PYTHON_REFRESH: MLflow imports GitPython, which prints a banner at every start when the
# image has no git (it has none: nothing here runs from a git checkout).
ENV PYTHONUNBUFFERED=1 \
    GIT_PYTHON_REFRESH=quiet \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    SOCIALADS_HOME=/var/lib/socialads

# Non-root user; SOCIALADS_HOME (embedded defaults, Prefect homes, the Prefect UI build) is its
# writable home. Created before the installs so that this layer never has to be rebuilt.
RUN groupadd --system --gid 10001 socialads \
    && useradd --system --uid 10001 --gid socialads --home-dir /var/lib/socialads \
       --shell /usr/sbin/nologin socialads \
    && mkdir -p /var/lib/socialads \
    && chown socialads:socialads /var/lib/socialads

# API, MLflow server, Prefect server with .env.example's ports (each compose service uses one).
EXPOSE 8800 5001 4200
CMD ["socialads", "--help"]

WORKDIR /src

# 1) Dependencies only, pinned by constraints.txt (the pins the tests use). The package
#    directories and the README (package metadata) are empty placeholders here so that this
#    layer is rebuilt only when pyproject.toml or constraints.txt change, not at every code
#    or documentation change.
COPY pyproject.toml constraints.txt ./
RUN mkdir -p socialads flows \
    && touch socialads/__init__.py flows/__init__.py README.md \
    && pip install -c constraints.txt . \
    && pip uninstall -y socialads \
    && rm -rf socialads flows build *.egg-info

# 2) The package itself (same constraints; its dependencies are already in place). The build
#    context is what .dockerignore lets through: the sources, the README and the two files
#    above. Few layers after this point: on some storage drivers (vfs) each is a full copy.
#    The working directory holds no .env, so only the environment given by compose applies.
WORKDIR /var/lib/socialads
COPY . /src/
RUN pip install --no-deps -c /src/constraints.txt /src \
    && rm -rf /src \
    && socialads --help >/dev/null
USER socialads:socialads
