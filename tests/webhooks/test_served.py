"""Webhooks from a real server (``worksession serve``) on each backend: a socket open means
no webhook; the internal API lists the queue and sends a dead webhook again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from tests.realtime.conftest import Server, dedicated_server, open_client, uid
from tests.webhooks.receiver import Receiver, in_thread
from worksession.kit.clock import utcnow
from worksession.kit.db import Database
from worksession.models import WebhookDelivery
from worksession.webhooks.verify import verify_worksession_signature

SECRET = "whsec-test-0123456789abcdef0123456789abcdef"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with in_thread(Receiver()) as running:
        yield running


@pytest.fixture
def server(db_url: str, tmp_path: Path, receiver: Receiver) -> Iterator[Server]:
    with dedicated_server(
        db_url, tmp_path, webhook_url=receiver.url, webhook_secret=SECRET
    ) as running:
        yield running


def _service(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token('svc', 'service')}"}


async def test_a_provider_with_a_socket_gets_no_webhook_one_without_gets_one(
    server: Server, receiver: Receiver
) -> None:
    online, offline, seeker = uid("provider"), uid("provider"), uid("seeker")
    async with open_client(server, "provider", online) as provider:
        order = await server.create_order(seeker_id=seeker, provider_ids=[online, offline])
        await provider.expect("work_request", work_id=order["work_id"])
        (hook,) = await receiver.wait_for(1)
        await asyncio.sleep(1.5)  # more than a poll: nothing for the online one
        assert len(receiver.received) == 1
    assert hook.json["user_id"] == offline
    assert hook.json["work_id"] == order["work_id"]
    assert verify_worksession_signature(hook.body, hook.headers["worksession-signature"], SECRET)


async def test_the_internal_api_lists_the_queue_and_retries_a_dead_webhook(
    server: Server, receiver: Receiver
) -> None:
    receiver.default = 503
    provider = uid("provider")
    await server.create_order(seeker_id=uid("seeker"), provider_ids=[provider])
    await receiver.wait_for(1)
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        url = "/internal/v1/webhooks/deliveries"
        assert (await http.get(url)).status_code == 401
        participant = {"Authorization": f"Bearer {server.token(provider, 'provider')}"}
        assert (await http.get(url, headers=participant)).status_code == 403
        pending = (await http.get(url, headers=_service(server))).json()["deliveries"]
        (row,) = pending
        assert (row["user_id"], row["status"]) == (provider, "pending")
        assert row["attempts"] >= 1
        assert row["last_error"] == "HTTP 503"

        database = Database(server.settings_database_url)
        try:
            async with database.transaction() as s:  # its 24 hours are over
                await s.execute(update(WebhookDelivery).values(give_up_at=utcnow()))
        finally:
            await database.dispose()
        for _ in range(100):
            dead = await http.get(url, params={"status": "dead"}, headers=_service(server))
            if dead.json()["deliveries"]:
                break
            await asyncio.sleep(0.1)
        (row,) = dead.json()["deliveries"]
        assert row["status"] == "dead"
        tried = len(receiver.received)

        receiver.default = 200
        retry = f"{url}/{row['id']}/retry"
        assert (await http.post(retry)).status_code == 401
        answer = await http.post(retry, headers=_service(server))
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "pending"
        await receiver.wait_for(tried + 1)
        await asyncio.sleep(0.3)
        assert (await http.post(retry, headers=_service(server))).status_code == 409
        unknown = f"{url}/00000000-0000-0000-0000-000000000000/retry"
        assert (await http.post(unknown, headers=_service(server))).status_code == 404
        left = await http.get(url, params={"status": "dead"}, headers=_service(server))
        assert left.json()["deliveries"] == []
    assert len({r.body for r in receiver.received}) == 1  # one webhook, one id, throughout
