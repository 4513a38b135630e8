"""Load-generator processes, driven in lock step by the benchmark.

Each is ``python -m bench.client <task> <config>``: it sets its task up (connects its share
of the sockets), prints one JSON line, then runs one phase per JSON line it reads on stdin
and answers each with one JSON line, until stdin closes. The parent reads the servers' CPU
time around each phase, so every process must be ready before a phase starts: that is
what the lock step buys. The machine has 2 cores shared with the servers, so the
generators' own CPU time is reported too.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from bench.processes import ProcessGroup
from bench.servers import REPOSITORY

SETUP_TIMEOUT_S = 600.0


class ClientPool:
    def __init__(self, task: str, configs: Sequence[dict[str, Any]]) -> None:
        self.task = task
        self.configs = list(configs)
        self.processes: list[asyncio.subprocess.Process] = []
        self.setup: list[dict[str, Any]] = []
        self.group = ProcessGroup([])

    async def __aenter__(self) -> ClientPool:
        for config in self.configs:
            self.processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.client",
                    self.task,
                    json.dumps(config),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    cwd=REPOSITORY,
                    limit=64 * 1024 * 1024,
                )
            )
        self.group = ProcessGroup([p.pid for p in self.processes])
        self.setup = await asyncio.wait_for(self._answers(), SETUP_TIMEOUT_S)
        return self

    async def _answers(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self._answer(p) for p in self.processes)))

    async def _answer(self, process: asyncio.subprocess.Process) -> dict[str, Any]:
        assert process.stdout is not None
        line = await process.stdout.readline()
        if not line:
            code = await process.wait()
            raise RuntimeError(f"load generator {process.pid} exited with {code}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def phase(
        self, params: dict[str, Any] | Sequence[dict[str, Any]], timeout_s: float = 600.0
    ) -> list[dict[str, Any]]:
        """Run one phase in every process (the same ``params``, or one each)."""
        each = [params] * len(self.processes) if isinstance(params, dict) else list(params)
        for process, own in zip(self.processes, each, strict=True):
            assert process.stdin is not None
            process.stdin.write(json.dumps(own).encode() + b"\n")
            await process.stdin.drain()
        return await asyncio.wait_for(self._answers(), timeout_s)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for process in self.processes:
            if process.stdin is not None:
                process.stdin.close()
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()


def source_address(index: int) -> tuple[str, int]:
    """A loopback source address for the ``index``-th socket: one address offers only
    ~28,000 ephemeral ports towards one server port, so large runs spread over several."""
    return (f"127.0.0.{2 + (index // 10_000) % 250}", 0)
