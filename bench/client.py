"""One load-generator process (see :mod:`bench.clients`): ``python -m bench.client
module:Class '<json config>'``. The class has ``async setup(config) -> dict``,
``async phase(params) -> dict`` and ``async teardown()``; answers go to stdout, one JSON
line each. Runs on uvloop, as the server does, so the generator costs as little CPU as it can.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import resource
import sys
from typing import Any

import uvloop


def _raise_open_files_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _answer(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


async def _run(task_path: str, config: dict[str, Any]) -> None:
    module_name, class_name = task_path.split(":")
    task = getattr(importlib.import_module(module_name), class_name)()
    _answer(await task.setup(config))
    try:
        while line := await asyncio.to_thread(sys.stdin.readline):
            _answer(await task.phase(json.loads(line)))
    finally:
        await task.teardown()


def main() -> None:
    _raise_open_files_limit()
    uvloop.run(_run(sys.argv[1], json.loads(sys.argv[2])))


if __name__ == "__main__":
    main()
