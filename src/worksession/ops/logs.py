"""Log set-up: plain text for people, JSON lines for machines, and no secrets in either.

Message text, phone numbers and tokens must never reach a log. The code never logs them;
this module also closes the paths that leak by default: uvicorn's access log prints the
query string (where browsers put ``?token=``) and ids in the path (whose availability was
read, which session's chat), and tracebacks are rendered without local variables.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from typing import Any

from worksession.kit.clock import isoformat_z, utcnow

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
session_id_var: ContextVar[str | None] = ContextVar("session_id", default=None)


class ContextFilter(logging.Filter):
    """Stamps the current request and session ids on every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.session_id = session_id_var.get()
        return True


class StripQueryString(logging.Filter):
    """Drops query strings from uvicorn's access and WebSocket lines: a browser client puts
    its token there (``?token=``). Any path-like argument loses everything after ``?``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                arg.split("?", 1)[0] if isinstance(arg, str) and arg.startswith("/") else arg
                for arg in record.args
            )
        return True


UNMATCHED_PATH = "<no route>"
route_template_var: ContextVar[str | None] = ContextVar("route_template", default=None)
"""The template of the route a request matched (``/v1/sessions/{session_id}/messages``),
set by the application as its response starts, which is when uvicorn logs the request."""


class PathsAsRoutes(logging.Filter):
    """Writes the path in uvicorn's access and WebSocket lines as the template of the route
    it matched: a path carries user, session and work-order ids, and who was looked up is
    nobody's business in a log. A request that matched no route has a caller-chosen path
    that may hold anything; it is written as ``<no route>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            template = route_template_var.get() or UNMATCHED_PATH
            record.args = tuple(
                template if isinstance(arg, str) and arg.startswith("/") else arg
                for arg in record.args
            )
        return True


class NoTracebackForBadInput(logging.Filter):
    """uvicorn logs a full traceback for every text frame that is not valid UTF-8 (it then
    closes with 1007, as RFC 6455 requires). Bad input is not a server fault: one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and str(record.msg).startswith("Invalid UTF-8"):
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": isoformat_z(utcnow()),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ("request_id", "session_id"):
            value = getattr(record, key, None)
            if value:
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
PAYLOAD_DUMPING_LOGGERS = ("aiosqlite", "websockets", "uvicorn.error")


def configure_logging(*, level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # One line per job run every second drowns everything else.
    logging.getLogger("apscheduler").setLevel(max(root.level, logging.WARNING))
    # At DEBUG these dump what passes through them: aiosqlite every SQL parameter (message
    # text, phone numbers), websockets (which logs through uvicorn.error) every handshake
    # header and frame (tokens, message text). They never go below INFO.
    for name in PAYLOAD_DUMPING_LOGGERS:
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))
    for name, guard in (
        ("uvicorn.access", StripQueryString),
        ("uvicorn.access", PathsAsRoutes),
        ("uvicorn.error", StripQueryString),
        ("uvicorn.error", PathsAsRoutes),
        ("uvicorn.error", NoTracebackForBadInput),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, guard) for f in logger.filters):
            logger.addFilter(guard())
