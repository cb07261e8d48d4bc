"""Small network helpers shared by the services and the engines: a free port, and waiting for a child server."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(
    url: str,
    process: subprocess.Popen,  # type: ignore[type-arg]
    timeout_s: float,
    what: str,
    log_tail: Callable[[], str] = lambda: "",
    poll_s: float = 1.0,
) -> None:
    """Return once ``GET <url>/health`` answers 2xx; raise when ``process`` exits first or ``timeout_s`` passes.

    Args:
        url: The server's base URL.
        process: The child process serving it.
        timeout_s: How long to wait.
        what: The server, for the error message ("vLLM's server for data/models/simulator").
        log_tail: Returns the end of the server's log, quoted in the error.
        poll_s: Seconds between tries.

    Raises:
        RuntimeError: The server exited or was not healthy in time; the message quotes its log.
    """
    import requests

    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting; its log:\n{log_tail()}")
        try:
            if requests.get(f"{url}/health", timeout=2).ok:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not healthy after {timeout_s:.0f} s; its log:\n{log_tail()}")
        time.sleep(poll_s)
