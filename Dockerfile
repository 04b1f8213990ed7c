# askq: one image for every askq process (worker, api, flower, simulator); the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ASKQ_VAR_DIR=/app/var \
    ASKQ_LOG_JSON=true

WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY askq ./askq
# Every volume mount point (see docker-compose.yml) must exist here, owned by askq: Docker
# creates a missing one root-owned, and askq could not write there (e.g. Flower's flower.db).
RUN pip install . \
    && useradd --system --user-group --uid 10001 --home-dir /app askq \
    && mkdir -p /app/var /app/var/flower \
    && chown -R askq:askq /app/var

USER askq
CMD ["askq", "worker"]
