"""`/metrics`: what is counted, under which labels, who may read it, and the database gauges."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from httpx import AsyncClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from app.core.config import Settings
from app.core.db import create_engine, create_sessionmaker, utcnow
from app.identity.scopes import ALL_SCOPES
from app.keys import service as keys_service
from app.main import create_app
from app.metrics import upstream_route
from app.metrics.router import exposition
from app.transcripts.models import Job


def count(route: str, method: str, status: int) -> float:
    labels = {"route": route, "method": method, "status": str(status)}
    value = REGISTRY.get_sample_value("aai_http_request_duration_seconds_count", labels)
    return value or 0.0


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def test_requests_counted_by_route_template_for_shortcuts_and_the_stack(
    client: AsyncClient,
) -> None:
    job_path = "/webhooks/assemblyai/{job_id}"
    before = (
        count("/v3/token", "GET", 401),
        count(job_path, "POST", 401),
        count("/v2/transcript/{transcript_id}", "GET", 401),
    )
    # The mint and webhook shortcuts (past the middleware stack) and a routed request.
    assert (await client.get("/v3/token?expires_in_seconds=60")).status_code == 401
    assert (
        await client.post(f"/webhooks/assemblyai/{uuid.uuid4()}", content=b"{}")
    ).status_code == 401
    assert (await client.get("/v2/transcript/abc123def456")).status_code == 401
    after = (
        count("/v3/token", "GET", 401),
        count(job_path, "POST", 401),
        count("/v2/transcript/{transcript_id}", "GET", 401),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]

    page = await client.get("/metrics")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/plain")
    assert "abc123def456" not in page.text  # templates, never raw paths
    found = samples(page.text)
    assert found[("aai_metrics_database_up", ())] == 1
    assert ("aai_reconciler_queue_depth", ()) in found
    assert "aai_db_pool_connections_in_use" in page.text


async def test_metrics_token_is_required_when_set(make_settings: Callable[..., Settings]) -> None:
    from asgi_lifespan import LifespanManager
    from httpx import ASGITransport

    app = create_app(make_settings(metrics_token=SecretStr("s3cret-scrape")), configure_logs=False)
    async with LifespanManager(app):
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://t") as c:
            missing = await c.get("/metrics")
            assert missing.status_code == 401
            assert missing.json()["error"] == "MetricsUnauthorized"
            assert "s3cret" not in missing.text
            wrong = await c.get("/metrics", headers={"Authorization": "Bearer s3cret-scrapf"})
            assert wrong.status_code == 401
            empty = await c.get("/metrics", headers={"Authorization": "Bearer "})
            assert empty.status_code == 401
            ok = await c.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
            assert ok.status_code == 200
            assert "aai_http_request_duration_seconds" in ok.text


async def test_metrics_disabled_means_no_route(make_settings: Callable[..., Settings]) -> None:
    from asgi_lifespan import LifespanManager
    from httpx import ASGITransport

    app = create_app(make_settings(metrics_enabled=False), configure_logs=False)
    async with LifespanManager(app):
        async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as c:
            assert (await c.get("/metrics")).status_code == 404


@pytest.fixture
def fresh_database(make_database: Callable[..., str]) -> str:
    return make_database()


async def test_queue_gauges_read_from_postgres(
    fresh_database: str, make_settings: Callable[..., Settings]
) -> None:
    url = fresh_database
    engine = create_engine(url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            key, _ = await keys_service.create_key(session, "metrics", ALL_SCOPES)
            for minutes in (3, 1):
                session.add(
                    Job(
                        key_id=key.id,
                        audio_url="https://example.com/a.wav",
                        next_check_at=utcnow() - timedelta(minutes=minutes),
                    )
                )
            session.add(  # not due yet
                Job(
                    key_id=key.id,
                    audio_url="https://example.com/b.wav",
                    next_check_at=utcnow() + timedelta(minutes=5),
                )
            )
        found = samples((await exposition(engine, make_settings().metrics)).decode())
        assert found[("aai_reconciler_queue_depth", ())] == 2
        assert 170 <= found[("aai_reconciler_oldest_due_seconds", ())] <= 240
        assert found[("aai_metrics_database_up", ())] == 1
    finally:
        await engine.dispose()


async def test_database_down_reported_not_raised(make_settings: Callable[..., Settings]) -> None:
    engine = create_engine("postgresql://nobody@127.0.0.1:1/none", pool_size=1)
    try:
        found = samples((await exposition(engine, make_settings().metrics)).decode())
    finally:
        await engine.dispose()
    assert found[("aai_metrics_database_up", ())] == 0
    assert ("aai_reconciler_queue_depth", ()) not in found


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/v2/transcript/5551722-f677-48a6-9287-39c0aafd9ac1", "/v2/transcript/{id}"),
        ("/v2/transcript/abcdef12345/sentences", "/v2/transcript/{id}/sentences"),
        ("/v3/token?expires_in_seconds=60", "/v3/token"),
        ("/v1/chat/completions", "/v1/chat/completions"),
        ("/v2/upload", "/v2/upload"),
    ],
)
def test_upstream_routes_have_no_ids(path: str, template: str) -> None:
    assert upstream_route(path) == template


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [
        ({}, True),
        ({"metrics_token": SecretStr("scrape-token-1")}, False),
    ],
)
async def test_unprotected_metrics_in_production_are_warned_about(
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, object],
    warned: bool,
) -> None:
    from asgi_lifespan import LifespanManager

    settings = make_settings(
        APP_ENV="production",
        assemblyai_api_key=SecretStr("a-real-key-123"),
        secrets_key=SecretStr(Fernet.generate_key().decode()),
        **overrides,
    )
    app = create_app(settings, configure_logs=False)
    with caplog.at_level("WARNING", logger="app.metrics.router"):
        async with LifespanManager(app):
            pass
    assert any(r.getMessage() == "metrics.unprotected" for r in caplog.records) is warned
