# hive-agent: the image runs conf/container.toml (the default config, with its data in
# /var/lib/hive-agent, a drain that fits `docker stop`'s 10 s and the monitor on every
# interface for the orchestrator's probes). As a sidecar the game server shares the pod's
# network, so the forward input stays on 127.0.0.1:24224; to take events from elsewhere,
# mount a config with bind = "0.0.0.0" at /etc/hive-agent/agent.toml.
#
# Keep the journal across containers on a named volume:
#   docker run -v hive-agent-data:/var/lib/hive-agent hive-agent
# Nothing is declared as a VOLUME: a container run without one leaves no anonymous volume behind.

# -- build: wheels of the dependencies, then of the agent ----------------------------------
FROM python:3.11-slim AS build
WORKDIR /src
# The dependencies first, from pyproject.toml alone: a change to the code does not fetch them again.
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['speed']))" > requirements.txt \
    && pip wheel --no-cache-dir --wheel-dir /wheels/deps -r requirements.txt \
    && cp requirements.txt /wheels/deps/
COPY README.md ./
COPY agent ./agent
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels/agent .

# -- the image: the installed package and its config, no source tree -----------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 hive-agent \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/hive-agent --shell /usr/sbin/nologin hive-agent \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/hive-agent
COPY --from=build /wheels/deps /tmp/deps
RUN pip install --no-cache-dir --no-index --find-links /tmp/deps -r /tmp/deps/requirements.txt && rm -rf /tmp/deps
COPY --from=build /wheels/agent /tmp/agent
RUN pip install --no-cache-dir --no-index --no-deps /tmp/agent/*.whl && rm -rf /tmp/agent
COPY conf/container.toml /etc/hive-agent/agent.toml

USER 10001:10001
WORKDIR /var/lib/hive-agent
EXPOSE 24224/tcp 24224/udp 24220/tcp
STOPSIGNAL SIGTERM
# `status` exits 0 healthy, 1 unhealthy (each reason printed), 2 when the agent cannot be asked.
HEALTHCHECK --interval=30s --timeout=10s --start-period=10s --retries=3 \
    CMD ["hive-agent", "status", "-c", "/etc/hive-agent/agent.toml", "--interval", "0.1"]
CMD ["hive-agent", "run", "-c", "/etc/hive-agent/agent.toml"]
