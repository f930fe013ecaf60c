# The amends image: built once (docker-compose build), every process runs from it.
FROM python:3.11.11-slim-bookworm

WORKDIR /app
COPY pyproject.toml README.md ./
COPY scheduler ./scheduler
COPY workers ./workers
COPY templates ./templates
COPY config ./config
RUN pip install --no-cache-dir . \
    && useradd --system --home-dir /app --no-create-home amends

ENV AMENDS_CONFIG=/app/config/amends.yaml \
    AMENDS_TEMPLATES=/app/templates \
    PYTHONUNBUFFERED=1
USER amends
ENTRYPOINT ["amends"]
CMD ["--help"]
