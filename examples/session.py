"""One whole session against a running worksession, for back-end developers: the same
steps the playground (/playground) plays, with ``websockets`` and ``httpx``.

    make run                                   # another terminal
    .venv/bin/python examples/session.py       # or --base http://host:port

It uses the playground's development-only endpoints for tokens and the order (they exist
only in ``dev``, on loopback); a real back end signs its own tokens and creates orders
with a service token on ``POST /internal/v1/work-orders``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect


async def expect(ws: ClientConnection, kind: str) -> dict[str, Any]:
    """The next frame of ``kind``, printing every frame on the way (S: seeker, P: provider)."""
    while True:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 10))
        who = "S" if "/seeker/" in ws.request.path else "P"
        print(f"{who} <- {frame.get('seq', ''):>2} {frame['type']}")
        if frame["type"] == kind:
            return frame


async def main(base: str) -> None:
    run = uuid.uuid4().hex[:6]
    seeker_id, provider_id = f"seeker-{run}", f"provider-{run}"
    ws_base = base.replace("http", "ws", 1)
    async with httpx.AsyncClient(base_url=base) as http:

        async def token(user_id: str, role: str) -> str:
            answer = await http.post(
                "/playground/api/tokens", json={"user_id": user_id, "role": role}
            )
            answer.raise_for_status()
            return str(answer.json()["token"])

        seeker_token, provider_token = (
            await token(seeker_id, "seeker"),
            await token(provider_id, "provider"),
        )
        async with (
            connect(f"{ws_base}/ws/work/seeker/?token={seeker_token}") as seeker,
            connect(f"{ws_base}/ws/work/provider/?token={provider_token}") as provider,
        ):
            await expect(seeker, "connected")
            await expect(provider, "connected")
            order = await http.post(
                "/playground/api/orders",
                json={"seeker_id": seeker_id, "provider_id": provider_id},
            )
            order.raise_for_status()
            work_id = (await expect(provider, "work_request"))["work_id"]
            await provider.send(
                json.dumps({"type": "work_response", "work_id": work_id, "accepted": True})
            )
            session = (await expect(provider, "work_accepted"))["session_id"]
            await expect(seeker, "work_accepted")

            mediums = {"whatsapp": "+91 98765-43210"}
            await seeker.send(
                json.dumps({"type": "medium_selection", "session_id": session, "mediums": mediums})
            )
            await expect(provider, "seeker_mediums_selected")
            for ws, lat in ((seeker, 12.9716), (provider, 12.9720)):  # about 45 m apart
                await ws.send(
                    json.dumps(
                        {
                            "type": "location_update",
                            "session_id": session,
                            "lat": lat,
                            "lng": 77.5946,
                            "accuracy": 5,
                        }
                    )
                )
            print("   distance:", (await expect(seeker, "distance_update"))["distance_formatted"])

            await provider.send(
                json.dumps(
                    {"type": "chat_message", "session_id": session, "message": "At the gate"}
                )
            )
            message = await expect(seeker, "chat_message")
            await seeker.send(
                json.dumps({"type": "message_read", "message_id": message["message_id"]})
            )
            await expect(provider, "message_status_update")  # delivered, then read
            print("   status:", (await expect(provider, "message_status_update"))["status"])

            await provider.send(json.dumps({"type": "complete_session", "session_id": session}))
            await expect(seeker, "session_completed")
            await seeker.wait_closed()
            print(f"   the server closed the seeker's socket with {seeker.close_code}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    asyncio.run(main(parser.parse_args().base))
