"""Live sessions written straight into the benchmark's database.

Going through offers and accepts would measure those instead; the rows are the ones an
accept leaves (an ``active`` session with both positions known, an accepted work order),
with ``last_seq = 0`` so that the first event a scenario causes is seq 1.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import insert

from worksession.kit.clock import utcnow
from worksession.kit.db import Database
from worksession.models import WorkOrder, WorkSession

BATCH = 2_000


@dataclass(frozen=True)
class LiveSession:
    session_id: str
    seeker_id: str
    provider_id: str


async def seed_live_sessions(database_url: str, count: int, tag: str) -> list[LiveSession]:
    """``count`` live sessions between ``s-<tag>-<i>`` and ``p-<tag>-<i>``, positions about
    2.5 km apart."""
    db = Database(database_url)
    now = utcnow()
    made = [LiveSession(str(uuid.uuid4()), f"s-{tag}-{i}", f"p-{tag}-{i}") for i in range(count)]
    try:
        for start in range(0, count, BATCH):
            chunk = list(enumerate(made))[start : start + BATCH]
            async with db.transaction() as s:
                order_ids = (
                    await s.execute(
                        insert(WorkOrder).returning(WorkOrder.id, sort_by_parameter_order=True),
                        [
                            {
                                "seeker_id": live.seeker_id,
                                "status": "accepted",
                                "details": {},
                                "offer_expires_at": now,
                                "created_at": now,
                                "updated_at": now,
                            }
                            for _, live in chunk
                        ],
                    )
                ).scalars()
                await s.execute(
                    insert(WorkSession),
                    [
                        {
                            "session_id": uuid.UUID(live.session_id),
                            "work_order_id": order_id,
                            "seeker_id": live.seeker_id,
                            "provider_id": live.provider_id,
                            "connection_state": "active",
                            "last_seq": 0,
                            "seeker_latitude": 12.97 + i * 1e-6,
                            "seeker_longitude": 77.59,
                            "provider_latitude": 12.99,
                            "provider_longitude": 77.61 + i * 1e-6,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for (i, live), order_id in zip(chunk, list(order_ids), strict=True)
                    ],
                )
    finally:
        await db.dispose()
    return made
