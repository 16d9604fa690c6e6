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
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    SOCIALADS_HOME=/var/lib/socialads

WORKDIR /src

# 1) Dependencies only, pinned by constraints.txt (the pins the tests use). The package
#    directories are empty placeholders here so that this layer is rebuilt only when
#    pyproject.toml or constraints.txt change, not at every code change.
COPY pyproject.toml constraints.txt README.md ./
RUN mkdir -p socialads flows \
    && touch socialads/__init__.py flows/__init__.py \
    && pip install -c constraints.txt . \
    && pip uninstall -y socialads \
    && rm -rf socialads flows build *.egg-info

# 2) The package itself (same constraints; its dependencies are already in place).
COPY socialads ./socialads
COPY flows ./flows
RUN pip install --no-deps -c constraints.txt . \
    && rm -rf /src/build /src/*.egg-info \
    && socialads --help >/dev/null

# Non-root user; SOCIALADS_HOME (embedded defaults, Prefect client home) is its writable home.
# The working directory holds no .env, so only the environment given by compose applies.
RUN groupadd --system --gid 10001 socialads \
    && useradd --system --uid 10001 --gid socialads --home-dir /var/lib/socialads \
       --shell /usr/sbin/nologin socialads \
    && mkdir -p /var/lib/socialads \
    && chown socialads:socialads /var/lib/socialads
USER socialads:socialads
WORKDIR /var/lib/socialads

# API, MLflow server, Prefect server (each service of the compose file uses one of them).
EXPOSE 8800 5000 4200

CMD ["socialads", "--help"]
