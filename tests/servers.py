"""Starting and stopping the platform's own commands as server processes in tests
(`healthlink serve`, `healthlink witness serve`)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

BIN = Path(sys.executable).parent / "healthlink"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until_up(proc: subprocess.Popen, base: str, *, timeout: float = 60) -> None:
    """Until ``base``/healthz answers 200; fails the test with the process's output otherwise."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1, verify=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{base} did not come up: {proc.stdout.read() if proc.stdout else ''}")


def stop(proc: subprocess.Popen) -> str:
    """SIGINT (a clean shutdown), then kill after 20 s; the process's output."""
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""
