# Image for the docker-compose stack (not used by the tests; there is no Docker engine in CI).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends gnupg && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir .
ENTRYPOINT []
