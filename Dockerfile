# One image for all three services; the command picks the service (see docker-compose.yml and deploy/helm).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
# UID/GID 10001: the Helm chart runs the pods as 10001:10001 with a read-only root filesystem (an emptyDir at /tmp).
RUN groupadd --gid 10001 scr \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin scr
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY tools ./tools
RUN pip install . && rm -rf /root/.cache

USER 10001:10001
EXPOSE 8001 8002 8003 2575
# Liveness only; readiness (database, Kafka) is /readyz.
HEALTHCHECK --interval=15s --timeout=3s CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"SCR_PORT\",\"8001\")}/healthz')"
CMD ["python", "-m", "services.record_api"]
