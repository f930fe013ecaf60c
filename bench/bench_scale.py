"""What a request costs with a long history: 100,000 communications stored, each endpoint timed.

Loads ``--incidents`` incidents (default 5,000) x ``--stakeholders`` (10), each with an
acknowledgment and a resolution (100,000 communications), through the engine into a private
``redis-server``, every message kept as sent (compressed, as the worker keeps it). Then times
each read endpoint of the HTTP API in process (FastAPI's TestClient: no network) and prints
p50/p99 per endpoint; the targets are a first page under 100 ms and ``/metrics`` under 50 ms.

    python bench/bench_scale.py [--incidents 5000] [--stakeholders 10] [--requests 50] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient

from scheduler.core.config import parse_config
from scheduler.core.engine import Engine
from scheduler.core.events import parse_event
from scheduler.core.model import Status, ms_of
from scheduler.service.settings import Settings
from scheduler.storage.redis_store import RedisStore
from scheduler.storage.timers import RedisTimerStore
from scheduler.web.app import create_app
from tests.realservers import RedisServer

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
TOKEN = "bench-token"
MESSAGE = (
    "Subject: Card payments failing\r\n\r\n" + "We are sorry: card payments fail for some of you. " * 40
)[:3600]


class _Nowhere:
    def deliver(self, comm_id: str) -> None:
        pass

    def flush(self) -> None:
        pass


def _config(stakeholders: int) -> dict[str, Any]:
    return {
        "sender": "Bench Status <status@bench.example>",
        "base_url": "https://status.bench.example",
        "stakeholders": [
            {
                "id": f"s{n:02d}",
                "name": f"Stakeholder {n}",
                "email": f"s{n}@bench.example",
                "services": ["pay"],
            }
            for n in range(stakeholders)
        ],
    }


def _event(kind: str, incident_id: str, at: datetime) -> Any:
    incident = (
        {"title": "Card payments failing", "severity": "sev2", "services": ["pay"]}
        if kind == "opened"
        else {}
    )
    return parse_event(
        {
            "schema": 1,
            "event_id": f"{incident_id}-{kind}",
            "type": f"incident.{kind}",
            "incident_id": incident_id,
            "occurred_at": at.isoformat(),
            "source": "bench",
            "incident": incident,
        }
    )


def _load(url: str, incidents: int, stakeholders: int) -> float:
    """Open and resolve every incident through the engine, and record each message as sent."""
    store = RedisStore(redis.Redis.from_url(url))
    config = parse_config(_config(stakeholders))
    engine = Engine(store, RedisTimerStore(store.client), lambda: config, _Nowhere())

    def one(n: int) -> None:
        incident_id = f"INC-{n:06d}"
        at = T0 + timedelta(seconds=n)
        comms = list(engine.handle_event(_event("opened", incident_id, at), at).communications)
        later = at + timedelta(minutes=30)
        comms += engine.handle_event(_event("resolved", incident_id, later), later).communications
        for comm_id in comms:
            store.begin_send(comm_id, ms_of(later), 60_000, "bench")
            store.finish_send(
                comm_id, "bench", Status.SENT, ms_of(later), sent_ms=ms_of(later), message=MESSAGE
            )

    started = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        for done, _ in enumerate(pool.map(one, range(incidents)), 1):
            if done % 100 == 0:
                rate = done / (time.perf_counter() - started)
                print(
                    f"\r\033[Kloading: {done:,} of {incidents:,} incidents ({rate:.0f}/s)",
                    end="",
                    file=sys.stderr,
                )
    print(file=sys.stderr)
    return time.perf_counter() - started


def _time(client: TestClient, path: str, requests: int) -> dict[str, float]:
    durations = []
    for _ in range(requests):
        started = time.perf_counter()
        response = client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        durations.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, (path, response.status_code, response.text[:200])
    durations.sort()
    return {
        "p50_ms": statistics.median(durations),
        "p99_ms": durations[min(len(durations) - 1, int(len(durations) * 0.99))],
        "bytes": len(response.content),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--incidents", type=int, default=5_000, help="incidents to load (default 5,000)")
    parser.add_argument("--stakeholders", type=int, default=10, help="stakeholders per incident (default 10)")
    parser.add_argument("--requests", type=int, default=50, help="requests per endpoint (default 50)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args()
    with RedisServer(appendfsync="no", extra_args=["--appendonly", "no"]) as redis_server:
        load_s = _load(redis_server.url, args.incidents, args.stakeholders)
        client = redis_server.client()
        stored = RedisStore(client)
        total = sum(1 for _ in stored.communications(batch=2_000))
        used = int(client.info("memory")["used_memory"])
        folder = Path(tempfile.mkdtemp(prefix="amends-bench-scale-"))
        (folder / "amends.yaml").write_text(yaml.safe_dump(_config(args.stakeholders)))
        settings = Settings(
            redis_url=redis_server.url,
            config_path=folder / "amends.yaml",
            api_token=TOKEN,
            secret_key="x" * 32,
        )
        middle = f"INC-{args.incidents // 2:06d}"
        paths = {
            "/ (review page, first page)": "/",
            "/v1/incidents (first page)": "/v1/incidents",
            f"/v1/incidents/{middle}": f"/v1/incidents/{middle}",
            "/v1/communications (first page)": "/v1/communications",
            "/metrics": "/metrics",
        }
        with TestClient(create_app(settings, clock=lambda: T0 + timedelta(days=1))) as api:
            results = {name: _time(api, path, args.requests) for name, path in paths.items()}
    report = {
        "communications": total,
        "incidents": args.incidents,
        "load_s": round(load_s, 1),
        "redis_used_memory_mb": round(used / 2**20, 1),
        "endpoints": results,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{total:,} communications of {args.incidents:,} incidents, loaded in {load_s:.0f} s; Redis {used / 2**20:.0f} MB"
    )
    print(f"{'endpoint':<40} {'p50':>9} {'p99':>9} {'bytes':>9}")
    for name, figures in results.items():
        print(f"{name:<40} {figures['p50_ms']:>7.1f}ms {figures['p99_ms']:>7.1f}ms {figures['bytes']:>9,}")


if __name__ == "__main__":
    main()
