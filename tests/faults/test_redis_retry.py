"""How the Redis client retries, seen through a proxy that counts connections: a command
that meets a connection an outage broke is retried once on a new connection; a command
that times out is not retried at all (each retry would cost another socket timeout, and
every caller waits on it: socket connects, REST budgets, publications)."""

from __future__ import annotations

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from tests.conftest import REDIS_URL
from tests.faults.conftest import ProxyTo
from worksession.kit.redis_broker import RedisBroker

pytestmark = pytest.mark.skipif(not REDIS_URL, reason="needs Redis (CI sets it)")


async def test_a_broken_connection_is_retried_once_and_a_timeout_never(
    proxy_to: ProxyTo,
) -> None:
    assert REDIS_URL
    proxy = proxy_to(REDIS_URL)
    broker = RedisBroker(proxy.url_for(REDIS_URL), prefix="retry-test")
    try:
        assert await broker.client.ping()
        assert proxy.connections == 1

        proxy.down()  # resets the pooled connection, as a restarted Redis does
        proxy.up()
        assert await broker.client.ping()  # no error: retried on a new connection
        assert proxy.connections == 2

        proxy.hold()  # Redis hangs: the command gets no reply
        with pytest.raises(RedisTimeoutError):
            await broker.client.ping()
        proxy.release()
        assert proxy.connections == 2, "a timed-out command was retried"
    finally:
        proxy.release()
        await broker.client.aclose()
