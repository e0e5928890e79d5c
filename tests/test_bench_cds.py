"""bench/cds_recognition.py's load generator: a fixed arrival rate (open model) and latency from
the due time, checked against a trivial local HTTP server (no platform)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from cds_recognition import open_loop, pct, request_bytes, summarise  # noqa: E402


class Server:
    """HTTP/1.1 keep-alive server answering each request after ``delay`` s; the request numbered
    ``stall_at`` (in arrival order) takes ``stall`` s instead.  One request at a time per connection."""

    def __init__(self, delay: float = 0.002, stall_at: int | None = None, stall: float = 0.0,
                 status: int = 200) -> None:
        self.delay, self.stall_at, self.stall, self.status = delay, stall_at, stall, status
        self.count = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.arrivals: list[float] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(ln.split(b":")[1]) for ln in head.split(b"\r\n")
                               if ln.lower().startswith(b"content-length")), 0)
                if length:
                    await reader.readexactly(length)
                n = self.count
                self.count += 1
                self.arrivals.append(time.monotonic())
                await asyncio.sleep(self.stall if n == self.stall_at else self.delay)
                body = b'{"cards": []}'
                writer.write(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (self.status, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
        except asyncio.CancelledError:
            writer.close()
            raise

    async def _shutdown(self) -> None:
        self.server.close()
        for w in self.writers:
            w.close()
        await self.server.wait_closed()
        for task in [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]:
            task.cancel()
        await asyncio.sleep(0.01)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def server():  # noqa: ANN201
    made: list[Server] = []

    def make(**kw) -> Server:  # noqa: ANN003
        s = Server(**kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def _drive(srv: Server, **kw):  # noqa: ANN003, ANN202
    raw = request_bytes("127.0.0.1", srv.port, "/hook", b'{"hook": "order-select"}', "tok")
    return asyncio.run(open_loop("127.0.0.1", srv.port, lambda i: raw, **kw))


def test_requests_arrive_at_the_fixed_rate(server) -> None:  # noqa: ANN001
    srv = server(delay=0.002)
    run = _drive(srv, rate=100, duration=2, connections=8)
    r = summarise(run)
    assert r["scheduled"] == r["completed"] == r["ok"] == 200 and r["errors"] == 0
    assert 90 <= r["achieved_rate"] <= 110 and r["rate_in_window"] >= 95
    gaps = [b - a for a, b in zip(srv.arrivals, srv.arrivals[1:])]
    assert abs(sum(gaps) / len(gaps) - 0.01) < 0.002  # 1/rate apart on average
    assert r["p50_ms"] < 50


def test_a_stall_shows_in_the_latency_of_the_requests_due_during_it(server) -> None:  # noqa: ANN001
    # one connection, 50/s: the server stalls 400 ms on request 20.  A closed-loop client would
    # send nothing meanwhile and record one slow request; the open model keeps the schedule, so
    # the ~20 requests due during the stall wait, and their latency counts from their due time.
    srv = server(delay=0.001, stall_at=20, stall=0.4)
    run = _drive(srv, rate=50, duration=2, connections=1)
    r = summarise(run)
    assert r["completed"] == 100 and r["errors"] == 0
    slow = [s for s in run.samples if s.latency > 0.1]
    assert len(slow) >= 15, [round(s.latency, 3) for s in run.samples]
    assert r["max_ms"] >= 380 and r["p90_ms"] >= 100
    # the requests after the stall were due on time: their sending was late, not their schedule
    assert all(abs(s.due - (run.t0 + s.i / 50)) < 1e-9 for s in run.samples)
    assert max(s.sent - s.due for s in run.samples) > 0.3


def test_errors_are_counted_by_kind(server) -> None:  # noqa: ANN001
    srv = server(status=503)
    r = summarise(_drive(srv, rate=50, duration=1, connections=4))
    assert r["ok"] == 0 and r["errors"] == 50 and r["errors_by_kind"] == {"HTTP 503": 50}


def test_timeouts_are_errors_not_dropped(server) -> None:  # noqa: ANN001
    srv = server(delay=0.001, stall_at=3, stall=2.0)
    r = summarise(_drive(srv, rate=20, duration=0.5, connections=2, timeout=0.5))
    assert r["completed"] == 10
    assert r["errors_by_kind"].get("timeout (TimeoutError)", 0) >= 1


def test_nearest_rank_percentile() -> None:
    xs = list(range(1, 101))
    assert pct(xs, 0.5) == 50 and pct(xs, 0.99) == 99 and pct(xs, 1.0) == 100 and pct([7], 0.99) == 7
