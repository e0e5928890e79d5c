"""bench/suite.py's account of the machine: what it is, and the load it was under while each
benchmark ran (the project's machine is shared: a busy neighbour shows in every figure)."""

from __future__ import annotations

import os
import shutil
import threading
import time


def _busy_ticks() -> int:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4]


def _own_ticks() -> int:
    """CPU ticks of this process and its reaped children (servers, wrk, worker processes)
    plus those of its live descendants."""
    with open("/proc/self/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    total = sum(int(x) for x in v[11:15])
    me = os.getpid()
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    w = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(d)] = int(w[1])
            ticks[int(d)] = sum(int(x) for x in w[11:15])  # its own and its reaped children's
    for pid in ticks:
        p, seen = parents.get(pid), 0
        while p and p != me and seen < 64:
            p, seen = parents.get(p), seen + 1
        if p == me and pid != me:
            total += ticks[pid]
    return total


def _postgres_ticks() -> dict[int, tuple[int, int]]:
    """{pid: (CPU ticks so far, start time in ticks since boot)} of the PostgreSQL processes."""
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    head, _, rest = f.read().rpartition(")")
            except OSError:
                continue
            if head.split("(", 1)[-1] == "postgres":
                w = rest.split()
                out[int(d)] = (int(w[11]) + int(w[12]), int(w[19]))
    return out


def _uptime_ticks() -> int:
    with open("/proc/uptime") as f:
        return int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK"))


class LoadWatch(threading.Thread):
    """Samples the load average and the PostgreSQL processes every second while a benchmark runs;
    at the end, the cores used on average by this suite (with its servers), by PostgreSQL (every
    backend, the suite's and other people's: the cluster is shared; a backend that lived less than
    a second between two samples is missed) and by everything else."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.loads: list[float] = [os.getloadavg()[0]]
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()
        self.boot0 = _uptime_ticks()
        self.pg_seen = {pid: ticks for pid, (ticks, _) in _postgres_ticks().items()}
        self.pg_used = 0
        self.busy0, self.own0 = _busy_ticks(), _own_ticks()

    def _sample_pg(self) -> None:
        for pid, (ticks, started) in _postgres_ticks().items():
            before = self.pg_seen.get(pid)
            if before is None:  # a backend that started during the window counts from 0
                before = 0 if started >= self.boot0 else ticks
            self.pg_used += max(0, ticks - before)
            self.pg_seen[pid] = ticks

    def run(self) -> None:
        n = 0
        while not self.stop_event.wait(1.0):
            self._sample_pg()
            n += 1
            if n % 2 == 0:
                self.loads.append(os.getloadavg()[0])

    def finish(self) -> dict:
        self.stop_event.set()
        self.join()
        self._sample_pg()
        wall = time.monotonic() - self.t0
        hz = os.sysconf("SC_CLK_TCK")
        busy = (_busy_ticks() - self.busy0) / hz / wall
        own = (_own_ticks() - self.own0) / hz / wall
        pg = self.pg_used / hz / wall
        return {"seconds": round(wall, 1), "loadavg_1m_min": round(min(self.loads), 2),
                "loadavg_1m_mean": round(sum(self.loads) / len(self.loads), 2),
                "loadavg_1m_max": round(max(self.loads), 2), "machine_busy_cores": round(busy, 2),
                "suite_cores": round(own, 2), "postgres_cores": round(pg, 2),
                "other_cores": round(max(0.0, busy - own - pg), 2)}


def machine_info() -> dict:
    from fhir_read import machine

    m = machine()
    m["free_disk_gb"] = round(shutil.disk_usage("/").free / 1e9, 1)
    return m
