# askq: one image for every askq process (worker, api, flower, simulator); the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ASKQ_VAR_DIR=/app/var \
    ASKQ_LOG_JSON=true

WORKDIR /app
COPY pyproject.toml README.md ./
COPY askq ./askq
COPY config ./config
COPY core ./core
COPY producers ./producers
COPY workers ./workers
COPY sim ./sim
COPY bench ./bench
RUN pip install . \
    && useradd --system --uid 10001 --home-dir /app askq \
    && mkdir -p /app/var \
    && chown askq /app/var

USER askq
CMD ["askq", "worker"]
