"""Shared timing helpers: interleaved repeats of measurements of at least ``MIN_SECONDS`` each,
reported as the median and the spread (min-max) of the repeats, in wall and CPU seconds.

Ratios are formed within one repeat (the two measurements next to each other in time), then
summarised, so slow drifts of a shared machine's load affect both sides of each ratio alike.
CPU seconds count this process and its descendants (worker pools, Ray's raylet and workers,
spawned ranks): what the work cost, whatever else the machine was doing.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

MIN_SECONDS = 10.0
REPEATS = 5


@dataclass
class Samples:
    """Wall and CPU seconds of each repeat of one measurement (per call when it was called several times)."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def spread(values: Sequence[float], fmt: str = ".2f") -> str:
    """'median (min-max)' of the repeats."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Repeat-by-repeat ratios num[i] / den[i]."""
    return [a / b for a, b in zip(num, den)]


def _proc_cpu(pid: int) -> float | None:
    """utime + stime of a live process from /proc (Linux), in seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants() -> dict[int, float]:
    """CPU seconds of every live descendant of this process (empty where /proc is missing)."""
    if not os.path.isdir("/proc"):
        return {}
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parent.items() if ppid in frontier and pid not in mine}
        mine |= frontier
    return {pid: cpu for pid in mine if (cpu := _proc_cpu(pid)) is not None}


class CpuClock:
    """CPU seconds of this process and its descendants since the clock was made: live ones read
    from /proc, finished ones from the kernel's account of reaped children."""

    def __init__(self):
        self.start = self._own()
        self.live = _descendants()
        self.self_start = time.process_time()

    @staticmethod
    def _own() -> float:
        me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime

    def seconds(self) -> float:
        """CPU seconds so far (call it before worker processes that are not our children exit)."""
        live = _descendants()
        return self._own() - self.start + sum(live.values()) - sum(self.live.values())

    def busiest(self) -> float:
        """CPU seconds so far of the busiest live descendant (a worker that is still alive)."""
        live = _descendants()
        return max((cpu - self.live.get(pid, 0.0) for pid, cpu in live.items()), default=0.0)


def timed(fn: Callable[[], object], calls: int = 1) -> tuple[float, float]:
    """(wall, CPU) seconds per call of ``calls`` calls of ``fn``."""
    clock, t0 = CpuClock(), time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls, clock.seconds() / calls


def measure(fns: dict[str, Callable[[], object]], *, repeats: int = REPEATS,
            min_seconds: float = MIN_SECONDS) -> dict[str, Samples]:
    """Each function, after one warm-up call, called often enough that one measurement takes at
    least ``min_seconds``; ``repeats`` measurements of each, interleaved. Seconds per call."""
    calls = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()  # warm-up, and the time of one call
        calls[name] = max(1, math.ceil(min_seconds / max(time.perf_counter() - t0, 1e-9)))
    out = {name: Samples() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            wall, cpu = timed(fn, calls[name])
            out[name].wall.append(wall)
            out[name].cpu.append(cpu)
    return out


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int = REPEATS,
                        min_seconds: float = MIN_SECONDS) -> dict[str, float]:
    """Median wall seconds per call of each function (see :func:`measure`)."""
    return {name: statistics.median(s.wall) for name, s in measure(fns, repeats=repeats, min_seconds=min_seconds).items()}
