"""The signature: the function docs/webhooks.md shows is the module's, verbatim; it accepts
what the service signs and refuses a wrong secret, a stale or future timestamp, a changed
body; the TypeScript one agrees (when Node.js is there); so does ``webhook-verify``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worksession.webhooks import verify
from worksession.webhooks.signing import sign

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "webhooks.md").read_text()
SECRET = "whsec-test-0123456789abcdef0123456789abcdef"
BODY = b'{"id":"1","type":"chat_message","user_id":"s\\u00e9","seq":3}'


def _block(language: str) -> str:
    (found,) = re.findall(rf"```{language}\n(.*?)```", DOC, re.S)
    return found


def test_the_doc_shows_the_module_verbatim() -> None:
    source = Path(verify.__file__).read_text()
    assert _block("python") == source[source.index("import hashlib") :]


def test_the_doc_function_verifies_what_the_service_signs() -> None:
    namespace: dict[str, object] = {}
    exec(_block("python"), namespace)  # noqa: S102 - the doc's own code, under test
    check = namespace["verify_worksession_signature"]
    assert callable(check)
    now = int(time.time())
    header = sign(SECRET, BODY, now)
    assert check(BODY, header, SECRET)
    assert not check(BODY, header, SECRET + "!")
    assert not check(BODY + b" ", header, SECRET)
    assert not check(BODY, sign(SECRET, BODY, now - 301), SECRET)  # stale
    assert not check(BODY, sign(SECRET, BODY, now + 301), SECRET)  # from the future
    assert check(BODY, sign(SECRET, BODY, now - 299), SECRET)
    assert not check(BODY, "", SECRET)
    assert not check(BODY, f"t={now}", SECRET)
    assert not check(BODY, "v1=abc,t=notanumber", SECRET)
    # Several v1 (a secret being rotated): any one that matches.
    rotated = f"{header},v1={'0' * 64}"
    assert check(BODY, rotated, SECRET)


MALFORMED = [
    "t=\u00b2,v1=" + "0" * 64,  # "²".isdigit() is True; int() refuses it
    "t=\u0663\u0663,v1=" + "0" * 64,  # Arabic-Indic digits
    "t=" + "9" * 400 + ",v1=" + "0" * 64,  # int() fine, the float comparison overflows
    "t=1764601200,v1=\u00e9",  # compare_digest refuses non-ASCII str
    "t=1764601200,v1=" + "\u00e9" * 64,
    "t=1764601200,v1=\x00",
    "t=,v1=",
    "=,=,,",
    "t=1764601200",
    "\ud800",
]


@pytest.mark.parametrize("header", MALFORMED)
def test_a_malformed_header_is_false_never_an_exception(header: str) -> None:
    namespace: dict[str, object] = {}
    exec(_block("python"), namespace)  # noqa: S102 - the doc's own code, under test
    for check in (namespace["verify_worksession_signature"], verify.verify_worksession_signature):
        assert callable(check)
        assert check(BODY, header, SECRET, now=1764601200) is False
        assert check(BODY, header, SECRET, tolerance_s=float("inf")) is False


@pytest.mark.skipif(
    shutil.which("node") is None and not os.environ.get("CI"),
    reason="needs Node.js (under CI its absence fails the test instead)",
)
def test_the_typescript_function_agrees(tmp_path: Path) -> None:
    source = _block("typescript")
    # Type annotations off, by hand: enough for this one function (no TypeScript compiler here).
    script = (
        source.replace('import { createHmac, timingSafeEqual } from "node:crypto";', "")
        .replace("export function", "function")
        .replace(": Buffer", "")
        .replace(": string[]", "")
        .replace(": number | undefined", "")
        .replace(": string", "")
        .replace(": number", "")
        .replace(": boolean", "")
    )
    now = int(time.time())
    cases = [
        (sign(SECRET, BODY, now), SECRET, True),
        (sign(SECRET, BODY, now), SECRET + "!", False),
        (sign(SECRET, BODY, now - 301), SECRET, False),
        ("garbage", SECRET, False),
        ("t=" + "9" * 400 + ",v1=" + "0" * 64, SECRET, False),
        (f"t={now},v1=" + "\u00e9" * 32, SECRET, False),
        (f"t={now},v1=\u00e9", SECRET, False),
    ]
    checks = "\n".join(
        f"out.push(verifyWorksessionSignature(body, {h!r}, {s!r}));" for h, s, _ in cases
    )
    (tmp_path / "check.js").write_text(
        'const { createHmac, timingSafeEqual } = require("node:crypto");\n'
        + script
        + f"\nconst body = Buffer.from({BODY.decode()!r});\nconst out = [];\n{checks}\n"
        + "console.log(JSON.stringify(out));\n"
    )
    result = subprocess.run(
        ["node", str(tmp_path / "check.js")], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str([e for _, _, e in cases]).replace(" ", "").lower()


def _cli(
    tmp_path: Path, *args: str, secret: str | None = SECRET
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKSESSION_")}
    if secret is not None:
        env["WORKSESSION_WEBHOOK_SECRET"] = secret
    return subprocess.run(
        [sys.executable, "-m", "worksession", "webhook-verify", *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=30,
    )


def test_the_cli_verifies_a_saved_body_and_header(tmp_path: Path) -> None:
    saved = tmp_path / "body.json"
    saved.write_bytes(BODY)
    now = int(time.time())
    good = _cli(tmp_path, "--body", str(saved), "--header", sign(SECRET, BODY, now))
    assert (good.returncode, good.stdout.strip()) == (0, "valid")

    wrong = _cli(tmp_path, "--body", str(saved), "--header", sign("other", BODY, now))
    assert (wrong.returncode, wrong.stderr.strip()) == (1, "invalid: signature mismatch")

    old = sign(SECRET, BODY, now - 3600)
    stale = _cli(tmp_path, "--body", str(saved), "--header", old)
    assert (stale.returncode, stale.stderr.strip()) == (
        1,
        "invalid: stale timestamp (older than 300 s)",
    )
    ahead = _cli(tmp_path, "--body", str(saved), "--header", sign(SECRET, BODY, now + 3600))
    assert (ahead.returncode, ahead.stderr.strip()) == (
        1,
        "invalid: timestamp in the future (more than 300 s ahead)",
    )
    odd = _cli(tmp_path, "--body", str(saved), "--header", "t=\u00b2,v1=\u00e9")
    assert (odd.returncode, odd.stderr.strip()) == (1, "invalid: signature mismatch")
    any_age = _cli(tmp_path, "--body", str(saved), "--header", old, "--max-age", "0")
    assert any_age.returncode == 0

    no_secret = _cli(tmp_path, "--body", str(saved), "--header", old, secret=None)
    assert no_secret.returncode == 2
    assert SECRET not in good.stdout + good.stderr + wrong.stderr
