"""The node's log: one JSON event per line on stderr, whatever else writes there."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_events_stay_whole_lines_while_a_library_logs_on_the_same_stream() -> None:
    """A library's stdlib log line (pynetdicom's) never lands between an event and its newline, which
    print()'s two writes allowed (a kill -9 test read '{...}ERROR pynetdicom...' as one line)."""
    code = textwrap.dedent("""
        import logging, threading
        from node.ops.logging import configure_logging, get_logger
        configure_logging("INFO", "json")
        log, library = get_logger("test"), logging.getLogger("pynetdicom.transport")
        def events():
            for n in range(3000):
                log.info("test.event", n=n)
        def errors():
            for _ in range(3000):
                library.error("Association request failed: unable to connect to remote")
        threads = [threading.Thread(target=events), threading.Thread(target=errors)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    events = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert [event["n"] for event in events] == list(range(3000))
    assert sum(line.startswith("ERROR pynetdicom") for line in run.stderr.splitlines()) == 3000
