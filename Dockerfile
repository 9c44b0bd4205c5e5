# hive-agent: builds and runs the default config (conf/agent.toml).
# As a sidecar the game server shares the pod's network, so 127.0.0.1:24224 is
# reachable; to listen on every interface, mount a config with bind = "0.0.0.0".
FROM python:3.11-slim

WORKDIR /app
COPY pyproject.toml README.md ./
COPY agent ./agent
COPY conf ./conf
RUN pip install --no-cache-dir '.[speed]' \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin hive-agent \
    && mkdir -p /app/var && chown hive-agent:hive-agent /app/var

USER hive-agent
# The journal, cursors and dead letters: keep them across restarts.
VOLUME ["/app/var"]
EXPOSE 24224/tcp 24224/udp
STOPSIGNAL SIGTERM
CMD ["hive-agent", "run", "-c", "conf/agent.toml"]
