# Image for the docker-compose stack and the Helm chart (not used by the tests; there is no Docker engine in CI).
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends gnupg && rm -rf /var/lib/apt/lists/* \
    && useradd --uid 10001 --user-group --home-dir /var/lib/inflow --create-home inflow \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/inflow/keys
WORKDIR /app
COPY . /app
RUN pip install --no-cache-dir -c requirements.lock . \
    && install -m 0755 deploy/docker-entrypoint.sh /usr/local/bin/inflow-entrypoint
USER 10001
ENV INFLOW_HOME=/var/lib/inflow HOME=/var/lib/inflow
ENTRYPOINT ["/usr/local/bin/inflow-entrypoint"]
CMD ["inflow", "--help"]
