# The amends image: built once (docker-compose build), every process runs from it.
# Every Python package comes from uv.lock, with its hash: the image holds the versions the
# tests passed with.
FROM python:3.11.11-slim-bookworm

ENV UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /app
RUN pip install --no-cache-dir uv==0.13.9
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-install-project --no-cache
COPY scheduler ./scheduler
COPY workers ./workers
COPY templates ./templates
COPY config ./config
RUN uv sync --locked --no-editable --no-cache \
    && useradd --system --home-dir /app --no-create-home amends

ENV PATH=/app/.venv/bin:$PATH \
    AMENDS_CONFIG=/app/config/amends.yaml \
    AMENDS_TEMPLATES=/app/templates \
    PYTHONUNBUFFERED=1
USER amends
ENTRYPOINT ["amends"]
CMD ["--help"]
