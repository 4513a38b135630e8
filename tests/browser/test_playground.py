"""A whole session played in the playground, in Chromium, against a live server: what a
person sees in each pane (distance text, ticks, the frames panel), step by step."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from tests.browser.conftest import screenshot_path
from tests.realtime.conftest import Server

TIMEOUT_MS = 10_000


async def _inbound_seqs(pane: Any) -> list[int]:
    cells = pane.locator('.frames tr[data-dir="in"][data-seq]')
    return [int(s) for s in await cells.evaluate_all("rows => rows.map(r => r.dataset.seq)")]


async def _text(pane: Any, selector: str) -> str:
    return str(await pane.locator(selector).text_content())


async def _count(pane: Any, selector: str) -> int:
    return int(await pane.locator(selector).count())


async def _drag(page: Any, marker: str, to: tuple[float, float]) -> None:
    """Drag a marker to ``to`` in the map's own coordinates (360 x 360)."""
    svg = await page.locator("#map").bounding_box()
    box = await page.locator(marker).bounding_box()
    await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    await page.mouse.down()
    scale = svg["width"] / 360
    await page.mouse.move(svg["x"] + to[0] * scale, svg["y"] + to[1] * scale, steps=25)
    await page.mouse.up()


async def test_a_whole_session_in_the_playground(
    page: Any, playground_server: Server, tmp_path: Path
) -> None:
    from playwright.async_api import expect

    started = time.monotonic()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"{playground_server.base_url}/playground")
    seeker = page.locator('.pane[data-role="seeker"]')
    provider = page.locator('.pane[data-role="provider"]')

    # An order, offered to the provider, accepted.
    await page.click("#setup")
    await expect(page.locator("#setup-status")).to_contain_text("offered to provider-")
    await provider.locator(".offer .accept").click()
    await expect(seeker.locator('.session-state[data-state="waiting"]')).to_be_visible()
    await expect(provider.locator(".presence")).to_have_text("seeker online")

    # Mediums: the seeker's choice, normalised, reaches the provider.
    await seeker.locator(".share-mediums").click()
    await expect(provider.locator(".peer-mediums")).to_have_text(
        "Seeker's mediums: whatsapp 9876543210"
    )
    await expect(seeker.locator('.session-state[data-state="active"]')).to_be_visible()

    # Both sent a fix on the accept: the markers start 575 m apart.
    await expect(seeker.locator(".distance")).to_have_text("575 meters away")
    await expect(provider.locator(".distance")).to_have_text("575 meters away")

    # The provider's marker dragged next to the seeker's: under 50 m, arrived.
    await _drag(page, "#marker-provider", (118, 206))
    await expect(seeker.locator(".proximity")).to_contain_text("Provider arrived")
    await expect(provider.locator(".proximity")).to_contain_text("Provider arrived")
    arrived = re.fullmatch(r"Provider arrived \((\d+) m\)", await _text(seeker, ".proximity"))
    assert arrived is not None
    assert int(arrived.group(1)) < 50
    # distance_update follows moves of 50 m or more (and the 30 s tick): the text shows the
    # last of those, within 50 m of the arrival.
    distance = re.fullmatch(r"(\d+) meters away", await _text(seeker, ".distance"))
    assert distance is not None
    assert int(distance.group(1)) < 100
    await expect(provider.locator(".distance")).to_have_text(await _text(seeker, ".distance"))

    # Chat both ways: typing shows on the other side, then ticks go to read.
    await seeker.locator(".chat-input").fill("Hello, I am at the gate")
    await expect(provider.locator(".typing")).to_have_text("Seeker is typing\u2026")
    await seeker.locator(".chat-send").click()
    await expect(provider.locator(".msg.theirs")).to_have_text(["Hello, I am at the gate"])
    await expect(seeker.locator(".msg.mine")).to_have_attribute("data-status", "read")
    await expect(seeker.locator(".msg.mine .ticks")).to_have_text("\u2713\u2713")
    await provider.locator(".chat-input").fill("Coming up the stairs")
    await provider.locator(".chat-send").click()
    await expect(seeker.locator(".msg.theirs")).to_have_text(["Coming up the stairs"])
    await expect(provider.locator(".msg.mine")).to_have_attribute("data-status", "read")

    # The seeker's connection drops; the provider writes meanwhile; the seeker comes back,
    # resumes, and sees the message once, in order, and reads it.
    connections_before = await _count(seeker, '.frames tr[data-dir="in"][data-type="connected"]')
    await seeker.locator(".drop").click()
    await expect(seeker.locator(".conn")).to_have_attribute("data-state", "waiting")
    await expect(seeker.locator(".chat-input")).to_be_disabled()
    await provider.locator(".chat-input").fill("Which floor?")
    await provider.locator(".chat-send").click()
    await expect(provider.locator(".msg.mine").last).to_have_attribute("data-status", "sent")
    await expect(seeker.locator(".conn")).to_have_attribute("data-state", "open")
    await expect(seeker.locator(".msg.theirs")).to_have_text(
        ["Coming up the stairs", "Which floor?"]
    )
    await expect(provider.locator(".msg.mine").last).to_have_attribute("data-status", "read")
    assert (
        await _count(seeker, '.frames tr[data-dir="in"][data-type="connected"]')
        == connections_before + 1
    )
    await expect(seeker.locator('.frames tr[data-dir="out"][data-type="resume"]')).to_have_count(1)
    await expect(seeker.locator('.frames tr[data-dir="in"][data-type="resumed"]')).to_have_count(1)
    # A 3 s drop is inside the 5 s grace: the provider never saw the seeker go offline.
    await expect(provider.locator(".presence")).to_have_text("seeker online")
    await page.screenshot(path=screenshot_path("playground.png", tmp_path), full_page=True)

    # The provider completes: both panes end, and neither client reconnects after 1000.
    await provider.locator(".complete").click()
    await expect(seeker.locator(".session-state")).to_have_text("session completed")
    await expect(provider.locator(".session-state")).to_have_text("session completed")
    await expect(seeker.locator(".conn")).to_have_text("closed (1000)")
    await expect(provider.locator(".conn")).to_have_text("closed (1000)")
    await page.wait_for_timeout(1500)
    await expect(seeker.locator(".conn")).to_have_text("closed (1000)")

    # Every pane saw every event of the session exactly once, in order, across the drop.
    seeker_seqs = await _inbound_seqs(seeker)
    provider_seqs = await _inbound_seqs(provider)
    assert seeker_seqs == list(range(1, len(seeker_seqs) + 1)), seeker_seqs
    assert provider_seqs == seeker_seqs
    assert await seeker.locator(".seq").text_content() == str(seeker_seqs[-1])
    print(f"\nplayground session played in {time.monotonic() - started:.1f} s")
