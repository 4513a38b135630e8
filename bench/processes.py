"""CPU time and memory of the processes under test, read from /proc.

CPU time is the figure that survives a shared, noisy machine: a run slowed down by a
neighbour takes longer but costs the same CPU per operation. /proc/<pid>/stat counts in
clock ticks (10 ms), so every window this is read over spans thousands of operations.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (all its threads), so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name may hold spaces; the fields after its closing parenthesis don't.
        fields = stat.read().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (uvicorn's workers, multiprocessing helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as stat:
                parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # it exited while we looked
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(children.get(current, ()))
    return found


@dataclass
class ProcessGroup:
    """A fixed set of processes whose CPU time and memory are read together."""

    pids: list[int]

    @classmethod
    def under(cls, roots: Iterable[int]) -> ProcessGroup:
        return cls([pid for root in roots for pid in descendants(root)])

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids:
            try:
                total += cpu_seconds(pid)
            except OSError:
                continue  # exited: its CPU time is gone with it
        return total

    def rss(self) -> int:
        total = 0
        for pid in self.pids:
            try:
                total += rss_bytes(pid)
            except OSError:
                continue
        return total


class CpuWindow:
    """CPU seconds a process group spent between ``start()`` and ``stop()``."""

    def __init__(self, group: ProcessGroup) -> None:
        self.group = group
        self._started = 0.0
        self.seconds = 0.0

    def start(self) -> CpuWindow:
        self._started = self.group.cpu()
        return self

    def stop(self) -> float:
        self.seconds = self.group.cpu() - self._started
        return self.seconds
