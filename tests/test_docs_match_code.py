"""The README's commands and the conformance statement's tables, read against the code, so that neither
drifts from what the node does: every ``qoq-node`` command line in the README and docs parses, every
``storescu`` line of the README stores its file in the node, and the conformance statement's SOP class and
transfer syntax tables name what the node uses and accepts."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian
from pynetdicom import AE, build_context

from node.cli import build_parser
from node.context import pacs

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CONFORMANCE = REPO / "docs" / "conformance-statement.md"


def _code_lines(path: Path) -> list[str]:
    """The lines of ``path``'s fenced code blocks, continuation lines joined, comments left on."""
    lines: list[str] = []
    inside = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside:
            if lines and lines[-1].endswith("\\"):
                lines[-1] = lines[-1][:-1] + " " + line.strip()
            else:
                lines.append(line)
    return lines


def _qoq_node_arguments(line: str) -> list[str] | None:
    """The arguments after ``qoq-node`` in a shell line (environment assignments and comment dropped)."""
    words = shlex.split(line, comments=True)
    for index, word in enumerate(words):
        if word.endswith("bin/qoq-node") or word == "qoq-node":
            return words[index + 1:]
    return None


def _documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``qoq-node`` command given in a code block of the README and docs/, with where it is."""
    commands = []
    for path in [README, *sorted((REPO / "docs").glob("*.md"))]:
        for line in _code_lines(path):
            arguments = _qoq_node_arguments(line) if "qoq-node" in line else None
            if arguments:
                commands.append((f"{path.name}: {line.strip()}", arguments))
    return commands


def test_every_documented_qoq_node_command_parses() -> None:
    """A renamed command or option fails here, with the line that names it."""
    commands = _documented_commands()
    assert len(commands) > 20, "the README's and docs' qoq-node lines were not found"
    parser = build_parser()
    refused = []
    for where, arguments in commands:
        try:
            parser.parse_args(arguments)
        except SystemExit:
            refused.append(where)
    assert not refused, "documented commands that qoq-node refuses:\n" + "\n".join(refused)


def _readme_storescu_lines() -> tuple[str, list[str]]:
    """The README's line that finds pydicom's sample folder, and its ``storescu -x…`` lines."""
    lines = _code_lines(README)
    folder = next(line for line in lines if line.startswith("T=$("))
    return folder, [line for line in lines if re.search(r"(^|&& )storescu -x", line)]


def test_readme_storescu_lines_store_each_compressed_file(make_node, dcmtk: None, tmp_path: Path) -> None:
    """Each compressed-file line of the README, run as written (against the test node's port), stores its
    file in its own transfer syntax: a missing per-syntax flag (``-R`` alone proposes no compressed syntax
    on dcmtk 3.6.7) fails here."""
    folder, sends = _readme_storescu_lines()
    syntaxes = {re.search(r"storescu (-x\w)", line).group(1) for line in sends}
    assert {"-xs", "-xy", "-xx", "-xv", "-xw", "-xt", "-xu", "-xr", "-xd"} <= syntaxes
    folder = folder.replace(".venv/bin/python", shlex.quote(sys.executable))
    for line in sends:
        node = make_node()  # one each: pydicom's MR_small files share their SOP Instance UID
        line = line.replace("11112", str(node.scp.port)).replace("/tmp/", f"{tmp_path}/")
        sent = shlex.split(line, comments=True)[-1]
        run = subprocess.run(["bash", "-c", f"set -e\n{folder}\n{line}\necho {sent}"], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 0, f"{line}\n{run.stderr}"
        source = pydicom.dcmread(run.stdout.strip().splitlines()[-1], stop_before_pixels=True)
        stored = node.spool.spool_dir / source.StudyInstanceUID / f"{source.SOPInstanceUID}.dcm"
        assert stored.is_file(), f"{line}: not stored"
        kept = pydicom.dcmread(stored, stop_before_pixels=True)
        sent_syntax = source.file_meta.TransferSyntaxUID
        # a deflated dataset is kept inflated, in its undeflated twin (conformance statement, 3.2.6)
        expected = ExplicitVRLittleEndian if sent_syntax == DeflatedExplicitVRLittleEndian else sent_syntax
        assert kept.file_meta.TransferSyntaxUID == expected, line


def _table(header: str) -> list[list[str]]:
    """The rows (cells stripped) of the conformance statement's table whose header row starts with ``header``."""
    lines = CONFORMANCE.read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2:]:  # past the header and its rule
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_overview_names_every_networking_role_the_node_plays() -> None:
    """The node is a Verification SCU (it probes each PACS destination with C-ECHO: egress/dicom.py) and a
    Query/Retrieve SCU (priors); the overview table said neither."""
    overview = {row[0]: row[1:] for row in _table("Networking SOP classes")}
    assert overview["Verification"] == ["Yes", "Yes"]
    query = next(role for name, role in overview.items() if name.startswith("Study Root Query/Retrieve"))
    assert query == ["Yes", "No"]


def test_sop_class_tables_name_real_uids_and_what_the_node_uses() -> None:
    """Each UID in the SOP class tables is the one its row names (pydicom's registry), and the query and
    retrieve classes are the ones the priors' C-FIND and C-GET request."""
    rows = _table("SOP class") + _table("Abstract syntax")
    checked = 0
    for row in rows:
        if re.fullmatch(r"[0-9.]+", row[1]):
            assert UID(row[1]).is_valid and UID(row[1]).name != row[1], f"unknown UID in {row}"
            assert _comparable(UID(row[1]).name) == _comparable(row[0]), f"{row[0]} is not {UID(row[1]).name}"
            checked += 1
    assert checked >= 9
    scu = {row[1] for row in _table("SOP class") if row[2] == "SCU"}
    assert {pacs.StudyRootQueryRetrieveInformationModelFind, pacs.StudyRootQueryRetrieveInformationModelGet} <= scu


def _comparable(name: str) -> str:
    """A SOP class or transfer syntax name without case, punctuation or a "SOP Class" suffix."""
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("colour", "color").removesuffix(" sop class"))


def _accepted_syntaxes_table() -> dict[str, str]:
    """Section 3.2.5's transfer syntaxes: UID -> the name the statement gives it."""
    return {uid: name for name, uid in _table("Transfer syntax") if uid != "—"}


def test_transfer_syntax_table_names_real_uids() -> None:
    """Each transfer syntax UID of section 3.2.5 is one, under the name the statement gives it (pydicom's
    registry; the JPEG XL syntaxes are newer than it)."""
    for uid, name in _accepted_syntaxes_table().items():
        known = UID(uid)
        if known.name != uid:
            assert known.is_transfer_syntax and _comparable(known.name) == _comparable(name.removesuffix(" (retired)"))
        else:
            assert name.startswith("JPEG XL"), f"{uid} ({name}) is no transfer syntax pydicom knows"


@pytest.mark.parametrize("sop_class", ["1.2.840.10008.5.1.4.1.1.2"])  # CT Image Storage
def test_every_transfer_syntax_the_statement_lists_is_accepted(node, sop_class: str) -> None:
    """A pynetdicom SCU proposes each transfer syntax of section 3.2.5 on its own context; the node accepts
    every one (a syntax the statement lists but the node refuses, or a broken table, fails here)."""
    syntaxes = list(_accepted_syntaxes_table())
    assert len(syntaxes) >= 25, syntaxes
    scu = AE(ae_title="DOCSCHECK")
    scu.requested_contexts = [build_context(sop_class, [syntax]) for syntax in syntaxes]
    association = scu.associate("127.0.0.1", node.scp.port, ae_title=node.config.dicom.ae_title)
    try:
        assert association.is_established
        accepted = {str(context.transfer_syntax[0]) for context in association.accepted_contexts}
    finally:
        association.release()
    assert set(syntaxes) - accepted == set()
