"""The STOW-RS receiver's parts without a server: a part's File Meta read from its first bytes, the tokens
file (errors that name no token, a rotated token), the response's status rule, and the one UID rule."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from node.config.dicomweb import StowConfig
from node.feedback.submit import FeedbackBody
from node.ingest.part10 import MalformedDataset, read_file_meta
from node.ingest.refusals import check_target_uid
from node.ingest.stow.clients import Clients, Forbidden, Unauthorized
from node.ingest.stow.parts import PartResult
from node.ingest.stow.response import http_status, response_module, to_json
from node.ops.tokens import TokensError
from node.testing.synthetic import write_ct_study
from node.uids import is_uid


def test_a_parts_file_meta_is_read_as_its_bytes_arrive(tmp_path: Path) -> None:
    data = write_ct_study(tmp_path, slices=1, size=32).files[0].read_bytes()
    complete = read_file_meta(data)
    assert complete is not None and complete.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert data[complete.dataset_offset:complete.dataset_offset + 2] == b"\x08\x00"  # the dataset's first group
    assert all(read_file_meta(data[:n]) is None for n in (0, 100, 131, 140, complete.dataset_offset - 1))
    with pytest.raises(MalformedDataset, match="DICM"):
        read_file_meta(b"%PDF-1.4" + bytes(200))
    for cut in (137, 140):  # a part that ends inside its File Meta
        with pytest.raises(MalformedDataset, match=r"truncated|runs past the end"):
            read_file_meta(data[:cut], complete=True)


def _clients(tmp_path: Path, entries: object, allowed: list[str] | None = None) -> Clients:
    path = tmp_path / "tokens.yaml"
    path.write_text(json.dumps(entries))
    return Clients(StowConfig(enabled=True, tokens_file=path, allowed_clients=allowed or []))


def test_tokens_file_errors_name_the_problem_never_a_token(tmp_path: Path) -> None:
    with pytest.raises(TokensError, match="token") as short:
        _clients(tmp_path, [{"name": "PACS", "token": "short-secret"}])
    assert "short-secret" not in str(short.value)
    with pytest.raises(TokensError, match="share a token"):
        _clients(tmp_path, [{"name": "A", "token": "x" * 20}, {"name": "B", "token": "x" * 20}])


def test_a_mounted_secret_directory_names_its_clients_by_file(tmp_path: Path) -> None:
    """The feedback API's format too: each file a token, its name the client's (an AE-title-like name here)."""
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "..data").mkdir()  # as a mounted Secret has: skipped
    (secret / "CLOUDPACS").write_text("cloud-pacs-token-0123456789\n")
    clients = Clients(StowConfig(enabled=True, tokens_file=secret))
    assert clients.authorize("Bearer cloud-pacs-token-0123456789") == "CLOUDPACS"
    (secret / "A-NAME-LONGER-THAN-16").write_text("another-token-0123456789")
    with pytest.raises(TokensError, match="client name is not valid") as error:
        clients.authorize("Bearer cloud-pacs-token-0123456789")
    assert "0123456789" not in str(error.value)


def test_a_rotated_token_is_read_again(tmp_path: Path) -> None:
    clients = _clients(tmp_path, [{"name": "PACS", "token": "first-token-0123456789"}], ["PACS"])
    assert clients.authorize("Bearer first-token-0123456789") == "PACS"
    with pytest.raises(Unauthorized):
        clients.authorize("Basic cGFjczpwYWNz")
    path = tmp_path / "tokens.yaml"
    path.write_text(json.dumps([{"name": "PACS", "token": "second-token-0123456789"},
                                {"name": "OTHER", "token": "other-token-0123456789"}]))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
    with pytest.raises(Unauthorized):
        clients.authorize("Bearer first-token-0123456789")
    assert clients.authorize("bearer second-token-0123456789") == "PACS"
    with pytest.raises(Forbidden):
        clients.authorize("Bearer other-token-0123456789")


def test_the_answers_status_and_body() -> None:
    stored, other_study = PartResult(1, "1.2.3", "1.2.3.4", 0), PartResult(2, "1.2.3", "1.2.3.5", 0xA900)
    not_dicom = PartResult(3, "", "", 0xC000, "part 3: not DICOM")
    assert [http_status(r) for r in ([stored], [stored, other_study], [other_study], [other_study, not_dicom], [])] \
        == [200, 202, 409, 400, 400]
    body = to_json(response_module([stored, not_dicom]))
    assert body["00081199"]["Value"][0]["00081155"] == {"vr": "UI", "Value": ["1.2.3.4"]}
    assert body["00081198"]["Value"] == [{"00081197": {"vr": "US", "Value": [0xC000]}}]
    assert body["00081190"] == {"vr": "UR"}


def test_one_uid_rule_for_a_requests_study_and_a_feedback_body() -> None:
    """node/uids.py's rule (PS3.5 9.1: no leading zeros, at most 64 characters) wherever a UID comes in."""
    assert is_uid("1.2.840.10008.1.2.1") and is_uid("1.0.3")
    for bad in ("", "1.02.3", "1..2", "1.2.", "1.2a", "1." + "2" * 63):
        assert not is_uid(bad), bad
        with pytest.raises(ValueError, match="not a valid UID"):
            check_target_uid(bad)
        with pytest.raises(ValidationError, match="study_instance_uid"):
            FeedbackBody.model_validate({"study_instance_uid": bad, "verdict": "accept", "reader_role": "resident"})
