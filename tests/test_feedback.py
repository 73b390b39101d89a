"""``POST /v1/feedback`` on the node's real HTTP server, and ``qoq-node feedback``: 401 without a known token, 403
for a role the token may not post, 404 for a study the node has not answered, 422 for a bad body or a label
outside the task's closed set (no value quoted back), 200 once the verdict is on disk; the OpenAPI document; the
API off unless configured; and a node process killed right after a 200 keeps the verdict, which
``qoq-node quality`` shows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from openapi_spec_validator import validate

from node.cli import main
from node.config import NodeConfig, config_problems
from node.config.quality import FeedbackConfig
from node.feedback.api import feedback_routes
from node.ops.http import WebServer
from node.ops.tokens import TokenSecret, TokensError, Unauthorized, read_tokens, token_name
from node.store import Answer, Store
from node.store.answers import insert_answer
from node.testing.loopback import LOOPBACK
from node.testing.synthetic import write_cr_study
from tests.helpers import instance_record, metric_value, stored_studies, verdicts_of, wait_for
from tests.reference import lesion_answer

STUDY = "1.2.826.0.1.3680043.8.498.1"
CLOSED = {"chest_xray": ("Pneumonia", "Pneumothorax", "No Finding")}
GOOD = {"study_instance_uid": STUDY, "verdict": "correct", "labels": ["pneumothorax"], "reader_role": "radiologist"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    """The feedback routes on a WebServer on a free port, over a store holding one answered study; tokens
    ``ris`` (any role) and ``viewer`` (resident only)."""
    secret = tmp_path / "tokens"
    secret.mkdir()
    (secret / "ris").write_text("s3cret-ris-0123456789\n")
    (secret / "viewer").write_text("s3cret-viewer-0123456789")
    (secret / "..data").mkdir()  # as a mounted Secret has: skipped
    store = Store(tmp_path / "state.db")
    store.instances.record([instance_record(f"{STUDY}.1", study=STUDY)])  # a study the node still keeps
    with store.database.transaction() as db:
        insert_answer(db, Answer(STUDY, 2, "chest_xray", ("Pneumonia",), "ACME", "X1", 1.0,
                                 store.answers.accession_key("ACC7")))
    config = FeedbackConfig(tokens_file=secret, token_roles={"viewer": ("resident",)})
    server = WebServer(LOOPBACK, 0, feedback_routes(store, CLOSED, config))
    server.start()
    yield f"http://{LOOPBACK}:{server.port}", store
    server.stop()
    store.close()


def _post(url: str, body: object, token: str | None = "s3cret-ris-0123456789") -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/v1/feedback", content=content, headers={**headers, "Content-Type": "application/json"},
                      timeout=10)


def test_each_refusal_has_its_status_and_a_reason_that_quotes_nothing(served: tuple[str, Store]) -> None:
    url, store = served
    for token, reason in ((None, "a bearer token is required"), ("wrong", "unknown bearer token"),
                          ("s3cret-ris-0123456789-and-more", "unknown bearer token")):
        answer = _post(url, GOOD, token)
        assert (answer.status_code, answer.headers["www-authenticate"]) == (401, "Bearer")
        assert answer.json() == {"error": reason}
    answer = _post(url, GOOD, "s3cret-viewer-0123456789")  # viewer may post resident verdicts only
    assert answer.status_code == 403 and "reader_role" in answer.json()["error"]
    unknown = {**GOOD, "study_instance_uid": "1.2.3.999"}
    assert (_post(url, unknown).status_code, _post(url, unknown).json()) == (
        404, {"error": "the node has no result for that study"})
    assert _post(url, {**GOOD, "study_instance_uid": None, "accession": "NOPE"}).status_code == 404
    refusals = {
        "labels must be from task chest_xray's closed set": {**GOOD, "labels": ["Martian Flu"]},
        "give exactly one of study_instance_uid and accession": {**GOOD, "accession": "ACC7"},
        "labels go with the verdict correct": {**GOOD, "verdict": "accept"},
        "reader_role is not one of": {**GOOD, "reader_role": "janitor"},
        "verdict: Input should be": {**GOOD, "verdict": "maybe"},
        "name: Extra inputs are not permitted": {**GOOD, "name": "DOE^JANE"},
        "study_instance_uid: String should match pattern": {**GOOD, "study_instance_uid": "DOE^JANE"},
    }
    for reason, body in refusals.items():
        answer = _post(url, body)
        assert answer.status_code == 422 and reason in answer.json()["error"], (reason, answer.text)
        assert not {"Martian", "DOE", "janitor", "maybe", STUDY} & set(answer.text.replace('"', " ").split()), \
            answer.text
    assert _post(url, b"{not json").json() == {"error": "the body is not JSON"}
    assert _post(url, b"[" * 20_000).status_code == 413
    assert verdicts_of(store, STUDY) == []


def test_a_good_call_is_kept_before_its_200_and_replaces_the_readers_earlier_one(served: tuple[str, Store]) -> None:
    url, store = served
    answer = _post(url, GOOD)
    assert answer.status_code == 200
    assert answer.json() == {"task": "chest_xray", "version": 2, "verdict": "correct", "labels": ["Pneumothorax"]}
    [kept] = verdicts_of(store, STUDY)
    assert (kept.source, kept.verdict, kept.found, kept.ai_labels, kept.reader_role, kept.version) == (
        "api", "correct", ("Pneumothorax",), ("Pneumonia",), "radiologist", 2)
    by_accession = {"accession": "ACC7", "verdict": "accept", "reader_role": "resident"}
    assert _post(url, by_accession, "s3cret-viewer-0123456789").status_code == 200
    assert _post(url, {**GOOD, "verdict": "reject", "labels": []}).status_code == 200
    assert sorted((v.reader_role, v.verdict) for v in verdicts_of(store, STUDY)) == [
        ("radiologist", "reject"), ("resident", "accept")]


def test_the_openapi_document_describes_the_call(served: tuple[str, Store]) -> None:
    url, _ = served
    document = httpx.get(f"{url}/v1/openapi.json", timeout=10).json()
    validate(document)  # a valid OpenAPI 3.1 document
    post = document["paths"]["/v1/feedback"]["post"]
    assert document["openapi"].startswith("3.1") and {"200", "401", "403", "404", "422"} <= set(post["responses"])
    body = document["components"]["schemas"]["FeedbackBody"]
    assert body["properties"]["verdict"]["enum"] == ["accept", "reject", "correct"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_without_tokens_the_api_is_off() -> None:
    assert feedback_routes(None, CLOSED, FeedbackConfig()) == []  # type: ignore[arg-type]  # never touched when off


def test_a_tokens_file_of_name_token_entries_read_again_when_rotated(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("# integrations\n- {name: ris, token: abc-0123456789abcdef}\n"
                      "- {name: viewer, token: def-0123456789abcdef}\n")
    assert read_tokens(tokens, "feedback.tokens_file") == {"ris": "abc-0123456789abcdef",
                                                           "viewer": "def-0123456789abcdef"}
    assert token_name("def-0123456789abcdef", read_tokens(tokens, "feedback.tokens_file")) == "viewer"
    assert token_name("", {"x": "x" * 16}) is None
    secret = TokenSecret(tokens, "feedback.tokens_file")
    assert secret.client("Bearer abc-0123456789abcdef") == "ris"
    with pytest.raises(Unauthorized, match="a bearer token is required"):
        secret.client("Basic abc")
    tokens.write_text("- {name: ris, token: ghi-0123456789abcdef}\n")
    os.utime(tokens, ns=(tokens.stat().st_atime_ns, tokens.stat().st_mtime_ns + 1_000_000_000))
    with pytest.raises(Unauthorized, match="unknown bearer token"):
        secret.client("Bearer abc-0123456789abcdef")
    assert secret.client("Bearer ghi-0123456789abcdef") == "ris"
    for text, problem in (("just-a-token-0123456789\n", "list"), ("- {name: ris, token: short}\n", "at least 16"),
                          ("- {name: a, token: same-0123456789abcdef}\n- {name: b, token: same-0123456789abcdef}\n",
                           "share a token"),
                          ("- {name: a, token: one-0123456789abcdef}\n- {name: a, token: two-0123456789abcdef}\n",
                           "given twice")):
        tokens.write_text(text)
        with pytest.raises(TokensError, match=problem) as error:
            read_tokens(tokens, "feedback.tokens_file")
        assert "0123456789" not in str(error.value) and "short" not in str(error.value)


def test_qoq_node_feedback_writes_through_the_same_checks(tmp_path: Path, capsys,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QOQ_NODE__STORAGE__ROOT", str(tmp_path))
    store = Store(tmp_path / "state.db")
    with store.database.transaction() as db:
        insert_answer(db, Answer(STUDY, 1, "chest_xray", ("Pneumonia",), "", "", 1.0))
    assert main(["feedback", "--study-instance-uid", STUDY, "--verdict", "correct", "--labels", "Martian Flu",
                 "--reader-role", "radiologist"]) == 1
    error = capsys.readouterr().err
    assert "feedback refused: labels must be from task chest_xray's closed set" in error and "Martian" not in error
    assert main(["feedback", "--study", STUDY, "--verdict", "accept", "--role", "radiologist"]) == 0  # the aliases
    assert "kept: accept on the chest_xray result (version 1)" in capsys.readouterr().out
    assert [v.verdict for v in verdicts_of(store, STUDY)] == ["accept"]
    store.close()


@pytest.mark.usefixtures("dcmtk")
def test_a_node_killed_right_after_the_200_keeps_the_verdict(node_process, storescu, tmp_path: Path) -> None:
    """A node process reads a CR (replayed answer Pneumonia); the API answers 401, 404, 422, then 200 — and a kill -9
    at once loses nothing: the verdict is in the state database and ``qoq-node quality`` shows it."""
    cr = write_cr_study(tmp_path / "cr", size=256)
    (tmp_path / "tokens").write_text("- {name: ris, token: s3cret-ris-0123456789}\n")
    node = node_process("node", {"QOQ_NODE__STUDY__STABLE_SECONDS": "0.5",
                                 "QOQ_NODE__FEEDBACK__TOKENS_FILE": str(tmp_path / "tokens")},
                        replay={"*": lesion_answer(pydicom.dcmread(cr.files[0]), "Pneumonia")}).start()
    assert storescu(node.dicom_port, list(cr.files)).returncode == 0
    wait_for(lambda: [s.state for s in stored_studies(node)] == ["complete"], timeout=60, what="the study read")
    body = {**GOOD, "study_instance_uid": cr.study_uid, "verdict": "accept", "labels": []}
    assert _post(node.url, body, None).status_code == 401
    assert _post(node.url, {**body, "study_instance_uid": "1.2.3.4"}).status_code == 404
    assert _post(node.url, {**body, "verdict": "correct", "labels": ["Martian Flu"]}).status_code == 422
    assert metric_value(node.metrics(), "qoqnode_answers_total", 'label="Pneumonia",task="chest_xray"') == 1
    answer = _post(node.url, {**body, "verdict": "correct", "labels": ["Pneumothorax"]})
    node.kill()
    assert answer.status_code == 200
    shown = subprocess.run([sys.executable, "-m", "node", "quality", "--json"], capture_output=True, text=True,
                           env={**os.environ, **node.settings}, timeout=60, check=True)
    [task] = json.loads(shown.stdout)["tasks"]
    assert (task["task"], task["studies"], task["verdicts"]) == ("chest_xray", 1, {"correct": 1})
    assert task["labels"] == {"Pneumonia": 1} and task["concordance"]["disagree"] == 1
    assert cr.study_uid not in shown.stdout


def test_check_names_a_tokens_secret_or_baseline_that_is_not_there(tmp_path: Path) -> None:
    config = NodeConfig.model_validate({"feedback": {"tokens_file": str(tmp_path / "missing")},
                                        "quality": {"baseline": str(tmp_path / "report.json")}})
    assert config_problems(config, environ={}) == [
        f"quality: baseline {tmp_path / 'report.json'} is not a readable file",
        f"feedback.tokens_file {tmp_path / 'missing'} cannot be read: FileNotFoundError"]
    with pytest.raises(ValueError, match=r"token_roles\.viewer names roles not in reader_roles: janitor"):
        FeedbackConfig(token_roles={"viewer": ("janitor",)})


def test_a_bad_tokens_secret_fails_check_and_the_start_as_the_stow_receivers_does(tmp_path: Path) -> None:
    feedback = tmp_path / "feedback-tokens.yaml"
    feedback.write_text("- {name: ris, token: short}\n")
    stow = tmp_path / "stow-tokens"  # a mounted Secret directory; a name no AE title can be
    stow.mkdir()
    (stow / "A-NAME-LONGER-THAN-16").write_text("stow-token-0123456789")
    config = NodeConfig.model_validate({"feedback": {"tokens_file": str(feedback)},
                                        "dicomweb": {"stow": {"enabled": True, "tokens_file": str(stow)}}})
    problems = config_problems(config, environ={})
    assert [p.split(": ")[0] for p in problems] == [f"feedback.tokens_file {feedback}",
                                                    f"dicomweb.stow.tokens_file {stow}"]
    assert "at least 16" in problems[0] and "client name is not valid" in problems[1]
    assert "short" not in problems[0] and "0123456789" not in problems[1]
    with pytest.raises(TokensError, match="at least 16"):  # the node's start builds the routes: refused there too
        feedback_routes(None, CLOSED, FeedbackConfig(tokens_file=feedback))  # type: ignore[arg-type]
    (stow / "A-NAME-LONGER-THAN-16").rename(stow / "CLOUDPACS")
    feedback.write_text("- {name: ris, token: s3cret-ris-0123456789}\n")
    assert config_problems(config, environ={}) == []
