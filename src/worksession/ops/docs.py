"""The published contract: AsyncAPI (JSON and a readable page) and the OpenAPI pages.

Everything here works offline. The AsyncAPI page is plain HTML with inline CSS rendered by
the service itself; Swagger UI and ReDoc are served from the assets that the
``fastapi-offline`` package vendors, instead of FastAPI's default CDN links.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request, status
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse

from worksession import __version__
from worksession.ops import asyncapi

router = APIRouter(tags=["documentation"])

ASSETS_DIR = Path(fastapi_offline.__file__).parent / "static"
ASSETS = frozenset({"swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js", "favicon.png"})
ASSETS_PATH = "/docs/assets"


def _secure(request: Request) -> bool:
    # uvicorn runs with proxy_headers, so a TLS-terminating proxy's X-Forwarded-Proto
    # is already reflected in the scheme.
    return request.url.scheme in ("https", "wss")


def _host(request: Request) -> str:
    return request.headers.get("host") or request.url.netloc


@router.get(
    "/asyncapi.json",
    summary="The WebSocket contract as an AsyncAPI 3.0 document",
    response_description="The AsyncAPI document, generated from the message models.",
)
async def asyncapi_json(request: Request) -> JSONResponse:
    document = asyncapi.build_document(host=_host(request), secure=_secure(request))
    return JSONResponse(document)


@router.get(
    "/asyncapi",
    summary="The WebSocket contract as a readable page",
    response_class=HTMLResponse,
    response_description="A self-contained HTML page (no scripts, no external resources).",
)
async def asyncapi_page(request: Request) -> HTMLResponse:
    return HTMLResponse(render_page(host=_host(request), secure=_secure(request)))


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        # The default sends the document to an online validator for a badge.
        swagger_ui_parameters={"validatorUrl": None},
    )


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    root = request.scope.get("root_path", "").rstrip("/")
    return get_redoc_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
        redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        with_google_fonts=False,
    )


@router.get(ASSETS_PATH + "/{name}", include_in_schema=False)
async def docs_asset(name: str) -> FileResponse:
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such asset")
    return FileResponse(ASSETS_DIR / name, headers={"Cache-Control": "public, max-age=86400"})


# --- the readable page -------------------------------------------------------------------

_CODE = re.compile(r"`([^`]+)`")
_SCHEMA_REF = re.compile(r"&quot;#/components/schemas/([A-Za-z0-9_.\-]+)&quot;")

STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330;
       margin: 0; background: #f6f7f9; }
main { max-width: 70rem; margin: 0 auto; padding: 1.5rem 2rem 4rem; background: #fff; }
h1 { margin-bottom: .2rem; } h1 small { font-size: .9rem; color: #5b6472; font-weight: normal; }
h2 { border-bottom: 1px solid #dde1e7; padding-bottom: .3rem; margin-top: 2.5rem; }
h3 { margin-bottom: .3rem; }
code { font: 13px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
       background: #eef1f5; padding: 0 .25rem; border-radius: 3px; }
pre { background: #1d2330; color: #e6e9ef; padding: .8rem 1rem; border-radius: 6px;
      overflow-x: auto; font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, monospace; }
pre a { color: #8cc4ff; }
table { border-collapse: collapse; width: 100%; margin: .5rem 0 1rem; }
th, td { text-align: left; vertical-align: top; border: 1px solid #dde1e7; padding: .35rem .6rem; }
th { background: #f0f2f5; }
nav ul { columns: 2; } nav a, td a { text-decoration: none; }
.badge { font-size: .75rem; padding: .1rem .45rem; border-radius: 999px; vertical-align: middle;
         white-space: nowrap;
         font-weight: 600; }
.client { background: #e3f1e6; color: #1f6b35; } .server { background: #e4ecfb; color: #1f4a9b; }
article { border-top: 1px solid #eef0f3; padding-top: .5rem; margin-top: 1.2rem; }
.muted { color: #5b6472; }
"""


def _text(value: str) -> str:
    """Escaped text with Markdown-style `code` spans."""
    return _CODE.sub(r"<code>\1</code>", html.escape(value))


def _schema_block(schema: dict[str, Any]) -> str:
    pretty = html.escape(json.dumps(schema, indent=2, ensure_ascii=False))
    linked = _SCHEMA_REF.sub(
        r'<a href="#schema-\1">&quot;#/components/schemas/\1&quot;</a>', pretty
    )
    return f"<pre>{linked}</pre>"


def _direction_badge(message: asyncapi.Message) -> str:
    label = "client &rarr; server" if message.direction == "client" else "server &rarr; client"
    return f'<span class="badge {message.direction}">{label}</span>'


def _channel_section(role: asyncapi.Role, ws_base: str) -> str:
    address = asyncapi.CHANNEL_ADDRESS[role]
    parts = [
        f'<section id="channel-{role}"><h2>{role.capitalize()} socket <code>{address}</code></h2>',
        f"<p>Connect to <code>{html.escape(ws_base + address)}</code> with a {role} token.</p>",
    ]
    for direction, verb in (("client", "sends"), ("server", "receives")):
        rows = "".join(
            f'<tr><td><a href="#msg-{m.key}"><code>{m.name}</code></a></td>'
            f"<td>{_direction_badge(m)}</td><td>{_text(m.description)}</td></tr>"
            for m in asyncapi.messages()
            if m.direction == direction and role in m.receivers
        )
        parts.append(
            f"<h3>Frames a {role} {verb}</h3><table><tr><th>type</th><th>direction</th>"
            f"<th>description</th></tr>{rows}</table>"
        )
    parts.append("</section>")
    return "".join(parts)


def _message_article(message: asyncapi.Message, schemas: dict[str, Any]) -> str:
    name = message.model.__name__
    who = "Sent by" if message.direction == "client" else "Received by"
    return (
        f'<article id="msg-{message.key}"><h3 id="schema-{name}"><code>{message.name}</code> '
        f"{_direction_badge(message)}</h3>"
        f"<p>{_text(message.description)}</p>"
        f'<p class="muted">{who}: {", ".join(message.receivers)}. Schema: <code>{name}</code>.</p>'
        f"{_schema_block(schemas[name])}</article>"
    )


def render_page(*, host: str, secure: bool) -> str:
    """The AsyncAPI document as one self-contained HTML page."""
    document = asyncapi.build_document(host=host, secure=secure)
    schemas: dict[str, Any] = document["components"]["schemas"]
    ws_base = f"{'wss' if secure else 'ws'}://{host}"
    payloads = {m.model.__name__ for m in asyncapi.messages()}
    intro = "".join(
        f'<section id="{re.sub(r"[^a-z]+", "-", title.lower())}"><h2>{html.escape(title)}</h2>'
        f"<p>{_text(text)}</p></section>"
        for title, text in asyncapi.INTRO
    )
    close_rows = "".join(
        f"<tr><td><code>{c.code}</code></td><td>{html.escape(c.name)}</td>"
        f"<td>{_text(c.meaning)}</td><td>{_text(c.client_should)}</td></tr>"
        for c in asyncapi.CLOSE_CODES
    )
    error_rows = "".join(
        f"<tr><td><code>{e.code}</code></td><td>{e.http_status}</td><td>{_text(e.when)}</td></tr>"
        for e in asyncapi.error_codes()
    )
    blocks = "".join(
        f'<article><h3 id="schema-{name}"><code>{name}</code></h3>{_schema_block(schema)}</article>'
        for name, schema in schemas.items()
        if name not in payloads
    )
    toc = "".join(
        f'<li><a href="#{anchor}">{label}</a></li>'
        for anchor, label in (
            ("connecting", "Connecting"),
            ("channel-seeker", "Seeker socket"),
            ("channel-provider", "Provider socket"),
            ("close-codes", "Close codes"),
            ("error-codes", "Error codes"),
            ("messages", "Messages"),
            ("shared-schemas", "Shared schemas"),
        )
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>worksession WebSocket API {__version__}</title><style>{STYLE}</style></head>"
        f"<body><main><h1>worksession WebSocket API <small>version {__version__} &middot; "
        f"AsyncAPI {asyncapi.ASYNCAPI_VERSION}</small></h1>"
        '<p class="muted">The same contract, machine-readable: <a href="asyncapi.json">'
        '<code>/asyncapi.json</code></a>. The REST API: <a href="docs"><code>/docs</code></a>'
        ' (<a href="openapi.json"><code>/openapi.json</code></a>).</p>'
        f"<nav><ul>{toc}</ul></nav>{intro}"
        + "".join(_channel_section(role, ws_base) for role in asyncapi.ROLES)
        + '<section id="close-codes"><h2>Close codes</h2><table><tr><th>code</th><th>name</th>'
        f"<th>meaning</th><th>what the client should do</th></tr>{close_rows}</table></section>"
        '<section id="error-codes"><h2>Error codes</h2><p>Sent in <code>error</code> frames; '
        "the HTTP status is what the REST API answers for the same error.</p><table><tr>"
        f"<th>code</th><th>HTTP</th><th>when</th></tr>{error_rows}</table></section>"
        '<section id="messages"><h2>Messages</h2>'
        + "".join(_message_article(m, schemas) for m in asyncapi.messages())
        + '</section><section id="shared-schemas"><h2>Shared schemas</h2>'
        f"<p>Building blocks referenced by the messages above.</p>{blocks}</section>"
        "</main></body></html>"
    )
