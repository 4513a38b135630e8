"""The playground's routes in process: served from the package, offline, and absent (404)
wherever it is off, production above all, and to anything but loopback talking to a
loopback Host; the reference client is public everywhere."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest

from worksession.config import Settings
from worksession.main import create_app

SECRET = "playground-test-secret-0123456789-abcdefghijklmnop"
SERVICE_SECRET = "playground-service-secret-0123456789-abcdefghij"
PLAYGROUND_PATHS = [
    ("GET", "/playground"),
    ("GET", "/playground/assets/playground.js"),
    ("GET", "/playground/assets/playground.css"),
    ("POST", "/playground/api/tokens"),
    ("POST", "/playground/api/orders"),
]


async def _client(
    settings: Settings, *, peer: str = "127.0.0.1", base_url: str = "http://127.0.0.1:8000"
) -> AsyncIterator[httpx.AsyncClient]:
    # No lifespan: none of the requests below reaches the application state.
    transport = httpx.ASGITransport(app=create_app(settings), client=(peer, 50000))
    async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        yield http


@pytest.fixture
async def production() -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(env="production", jwt_secret=SECRET, service_jwt_secret=SERVICE_SECRET)
    async for http in _client(settings):
        yield http


@pytest.fixture
async def dev() -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client(Settings(env="dev", jwt_secret=SECRET)):
        yield http


@pytest.mark.parametrize(("method", "path"), PLAYGROUND_PATHS)
async def test_production_has_no_playground_and_no_token_endpoint(
    production: httpx.AsyncClient, method: str, path: str
) -> None:
    body = {"user_id": "mallory", "role": "seeker"} if method == "POST" else None
    response = await production.request(method, path, json=body)
    assert response.status_code == 404
    assert "token" not in response.text


@pytest.mark.parametrize("env", ["test", "dev"])
async def test_the_playground_is_off_when_switched_off(env: str) -> None:
    settings = Settings(env=env, jwt_secret=SECRET, playground=False)  # type: ignore[arg-type]
    async for http in _client(settings):
        for method, path in PLAYGROUND_PATHS:
            assert (await http.request(method, path, json={})).status_code == 404, path


async def test_the_reference_client_is_public_in_production(
    production: httpx.AsyncClient,
) -> None:
    response = await production.get("/client/worksession-client.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "export class WorksessionClient" in response.text


async def test_the_page_loads_every_asset_from_this_service(dev: httpx.AsyncClient) -> None:
    page = await dev.get("/playground")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", page.text)
    assert any(a.endswith(".js") for a in assets)
    scripts = [page.text]
    for asset in assets:
        if asset.startswith("data:"):
            continue
        assert asset.startswith(("/playground/assets/", "/client/")), asset
        fetched = await dev.get(asset)
        assert fetched.status_code == 200, asset
        scripts.append(fetched.text)
    script = (await dev.get("/playground/assets/playground.js")).text
    assert 'from "/client/worksession-client.js"' in script
    # Offline: nothing is fetched from anywhere else.
    for text in [*scripts, script]:
        assert not re.search(r"""["'(]\s*(https?:)?//""", text), text[:200]


async def test_only_the_page_assets_are_served(dev: httpx.AsyncClient) -> None:
    assert (await dev.get("/playground/assets/worksession-client.js")).status_code == 404
    assert (await dev.get("/playground/assets/..%2Fplayground.py")).status_code == 404
    assert (await dev.get("/playground/assets/playground.html")).status_code == 404


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("127.0.0.1", "localhost"),
        ("127.0.0.1", "localhost:8000"),
        ("127.0.0.1", "127.0.0.1:8000"),
        ("::1", "[::1]:8000"),
        ("::1", "LOCALHOST:1"),
    ],
)
async def test_the_playground_answers_loopback_by_a_loopback_name(peer: str, host: str) -> None:
    async for http in _client(Settings(env="dev", jwt_secret=SECRET), peer=peer):
        assert (await http.get("/playground", headers={"Host": host})).status_code == 200


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        # DNS rebinding: a page whose name now resolves to 127.0.0.1 keeps its own Host.
        ("127.0.0.1", "evil.example"),
        ("127.0.0.1", "evil.example:8000"),
        ("127.0.0.1", "localhost.evil.example"),
        ("127.0.0.1", "127.0.0.1.nip.io:8000"),
        ("127.0.0.1", "localhost:8000@evil.example"),
        ("127.0.0.1", ""),
        # A proxy in front: uvicorn's proxy_headers makes client.host the forwarded address.
        ("203.0.113.9", "localhost:8000"),
        ("10.0.0.2", "127.0.0.1"),
        ("192.168.1.20", "[::1]"),
    ],
)
async def test_the_playground_is_absent_to_anything_but_loopback(peer: str, host: str) -> None:
    async for http in _client(Settings(env="dev", jwt_secret=SECRET), peer=peer):
        for method, path in PLAYGROUND_PATHS:
            # A valid body: the 404 is the host check's, not a validation error's.
            body = {"user_id": "mallory", "role": "seeker"} if "tokens" in path else {}
            response = await http.request(method, path, json=body, headers={"Host": host})
            assert response.status_code == 404, (method, path)
            assert "token" not in response.text


async def test_the_reference_client_stays_public_behind_a_proxy() -> None:
    settings = Settings(env="dev", jwt_secret=SECRET)
    async for http in _client(settings, peer="203.0.113.9", base_url="https://ws.example"):
        assert (await http.get("/client/worksession-client.js")).status_code == 200
