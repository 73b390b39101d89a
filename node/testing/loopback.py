"""Loopback plumbing the test peers share: free ports on 127.0.0.1, JSON over HTTP, and waiting for
and stopping the child processes they start."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on loopback that is free now."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def http_json(url: str, data: bytes | None = None, timeout: float = 10.0, method: str | None = None) -> Any:
    """GET (or POST ``data`` to) a URL and decode the JSON answer."""
    if not url.startswith("http://"):
        raise ValueError(f"not an http URL: {url}")
    method = method or ("POST" if data is not None else "GET")
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (loopback only)
        return json.loads(response.read() or b"null")


def wait_until(ready: Callable[[], bool], what: str, process: subprocess.Popen, timeout: float,
               log_path: Path) -> None:
    """Poll ``ready`` until it is true; fail with the process's log if it exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text()[-2000:]
            command = process.args  # a list of arguments, as the node's peers are started
            program = command[0] if isinstance(command, list | tuple) else command
            raise RuntimeError(f"{program!s} exited with {process.returncode}; log: {tail}")
        if ready():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout} s; log: {log_path.read_text()[-2000:]}")


def _answers_http(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=1).close()  # noqa: S310 (loopback only)
    except urllib.error.HTTPError:  # an answer, if not a 2xx (an Orthanc with users answers 401)
        return True
    except (urllib.error.URLError, ConnectionError, OSError):
        return False
    return True


def wait_http(url: str, process: subprocess.Popen, timeout: float, log_path: Path) -> None:
    """Wait until ``url`` answers (any HTTP status), failing as ``wait_until`` does."""
    wait_until(lambda: _answers_http(url), f"{url} did not answer", process, timeout, log_path)


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM a child process and wait for it; SIGKILL it if it does not exit within ``timeout``."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
