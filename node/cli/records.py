"""``qoq-node studies``, ``quarantine`` and ``outbox``: what the node's state database holds, and the
retries an operator asks for."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from node.cli.common import Commands, add_command, iso, opened_store
from node.store import OutboxState, QuarantinedObject, Store


def cmd_studies(args: argparse.Namespace) -> int:
    """List studies with their state (UIDs and counts only, no patient identity), or read failed ones again."""
    if args.action == "retry":
        return _retry_failed_studies(args)
    with opened_store(args) as store:
        studies = store.studies.summaries()
    if args.json:
        print(json.dumps([asdict(study) for study in studies], indent=2))
        return 0
    print(f"{'STUDY INSTANCE UID':<64}  {'VER':>3}  {'STATE':<11} {'INST':>5} {'SER':>4}  {'MOD':<8} "
          f"{'LAST RECEIVED':<25} {'TRIES':>5}  DETAIL")
    for s in studies:
        print(f"{s.study_uid:<64}  {s.version:>3}  {s.state:<11} {s.instances:>5} {s.series:>4}  "
              f"{s.modalities:<8} {iso(s.last_received):<25} {s.attempts:>5}  {s.detail}")
    return 0


def _retry_failed_studies(args: argparse.Namespace) -> int:
    """Failed studies (named, or ``--failed``: every one) back to stable, to be read again at once."""
    if bool(args.uids) == args.failed:
        print("qoq-node: studies retry takes study UIDs or --failed (not both)", file=sys.stderr)
        return 1
    with opened_store(args) as store:
        moved = store.studies.retry_failed(time.time(), args.uids or None)
    for uid in args.uids:
        if uid not in moved:
            print(f"qoq-node: study {uid} is not failed: left as it is", file=sys.stderr)
    print(f"{len(moved)} failed study(ies) will be read again")
    return 0 if moved else 1


def _refusal_detail(quarantined: QuarantinedObject) -> str:
    """The refusal's detail from the object's JSON note ('' when the note is gone)."""
    try:
        return str(json.loads(Path(quarantined.path).with_suffix(".json").read_text()).get("detail", ""))
    except (OSError, ValueError):
        return ""


def cmd_quarantine(args: argparse.Namespace) -> int:
    """List the objects the node refused and kept aside, with why and who sent them."""
    with opened_store(args) as store:
        kept = [{**asdict(q), "detail": _refusal_detail(q)} for q in store.quarantine.items()]
    if args.json:
        print(json.dumps(kept, indent=2))
        return 0
    print(f"{'RECEIVED':<25} {'REASON':<22} {'CALLING AE':<16} {'FILE':<40} DETAIL")
    for q in kept:
        print(f"{iso(q['received_at']):<25} {q['reason']:<22} {q['calling_ae']:<16} {Path(q['path']).name:<40} "
              f"{q['detail']}")
    return 0


def cmd_outbox(args: argparse.Namespace) -> int:
    """List the outbox, or make failed/waiting items due now."""
    with opened_store(args) as store:
        if args.action == "list":
            items = store.outbox.items(args.state)
            if args.json:
                print(json.dumps([asdict(item) for item in items], indent=2))
            else:
                print(f"{'ID':>6}  {'DESTINATION':<16} {'KIND':<8} {'STATE':<8} {'TRIES':>5}  "
                      f"{'NEXT ATTEMPT':<25} LAST RESULT")
                for item in items:
                    print(f"{item.id:>6}  {item.destination:<16} {item.kind:<8} {item.state:<8} {item.attempts:>5}  "
                          f"{iso(item.next_attempt_at):<25} {item.last_error}")
        else:
            if args.action == "retry" and args.id is None:
                print("qoq-node: outbox retry needs an ID (or use retry-all)", file=sys.stderr)
                return 1
            count = store.outbox.retry(time.time(), args.id if args.action == "retry" else None)
            if args.action == "retry" and count == 0:
                print(f"qoq-node: outbox item {args.id} {_why_not_due(store, args.id)}", file=sys.stderr)
                return 1
            print(f"{count} outbox item(s) due now")
    return 0


def _why_not_due(store: Store, item_id: int) -> str:
    """Why ``outbox retry ID`` made nothing due: the item is not there, or it was delivered already."""
    item = next((item for item in store.outbox.items() if item.id == item_id), None)
    if item is None:
        return "does not exist"
    return f"was delivered already ({item.last_error}); it is not sent again"


def add_studies(commands: Commands) -> None:
    """``qoq-node studies [list|retry]``."""
    studies = add_command(commands, "studies", cmd_studies,
                          "List received studies and their state, or read failed studies again (retry).")
    studies.add_argument("action", nargs="?", choices=["list", "retry"], default="list")
    studies.add_argument("uids", nargs="*", help="the failed studies to read again (retry)")
    studies.add_argument("--failed", action="store_true", help="retry every failed study")
    studies.add_argument("--json", action="store_true", help="machine-readable output (list)")


def add_quarantine(commands: Commands) -> None:
    """``qoq-node quarantine``."""
    quarantine = add_command(commands, "quarantine", cmd_quarantine,
                             "List the objects refused on C-STORE and kept aside, with the reason.")
    quarantine.add_argument("--json", action="store_true", help="machine-readable output")


def add_outbox(commands: Commands) -> None:
    """``qoq-node outbox list|retry|retry-all``."""
    outbox = add_command(commands, "outbox", cmd_outbox, "List deliveries to PACS and EHR, or retry failed ones.")
    outbox.add_argument("action", choices=["list", "retry", "retry-all"])
    outbox.add_argument("id", nargs="?", type=int, help="the item to retry (retry)")
    outbox.add_argument("--state", choices=[state.value for state in OutboxState], help="list only items in this state")
    outbox.add_argument("--json", action="store_true", help="machine-readable output (list)")
