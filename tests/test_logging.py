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
    print()'s two writes allowed (a kill -9 test read '{...}ERROR pynetdicom...' as one line); and it is a
    JSON event itself."""
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
    events = [json.loads(line) for line in run.stderr.splitlines()]  # every line is a JSON event
    assert [event["n"] for event in events if "n" in event] == list(range(3000))
    library = [event for event in events if event["event"] == "library.log"]
    assert len(library) == 3000 and library[0]["component"] == "pynetdicom.transport"
    assert library[0]["level"] == "error" and library[0]["message"].startswith("Association request failed")


def test_exceptions_and_library_text_never_carry_their_messages() -> None:
    """A logged exception is its type and code locations, not its message (a library quotes the value it
    chokes on); a warning or a pydicom log line is an event without its text."""
    code = textwrap.dedent("""
        import logging, warnings
        from node.ops.logging import configure_logging, get_logger
        configure_logging("INFO", "json")
        try:
            raise ValueError("Unable to convert '1923-04-05' to 'DA' object for ZEBRA^QUAGGA")
        except ValueError:
            get_logger("test").exception("results.failed")
        warnings.warn("Invalid value for VR DA: '1923-04-05'")
        logging.getLogger("pydicom").warning("ZEBRA^QUAGGA has a bad name")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    events = [json.loads(line) for line in run.stderr.splitlines()]
    assert "1923-04-05" not in run.stderr and "ZEBRA" not in run.stderr
    [failed] = [e for e in events if e["event"] == "results.failed"]
    assert failed["exception"]["type"] == "ValueError" and failed["exception"]["frames"][0].startswith("<string>:")
    assert [e["component"] for e in events if e["event"] == "library.log"] == ["py.warnings", "pydicom"]
