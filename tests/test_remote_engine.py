"""The ``openai`` backend against ``qoq-node engine serve``: same tokens as the local engine, retries,
refusals, an engine server that is down (studies wait, nothing is failed), and the whole loop."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image

from node.config import ConfigError, EngineConfig, NodeConfig, config_problems, require_usable
from node.engine import EngineRequest, GenerationSettings
from node.engine.errors import EngineLoadError, EngineUnavailable
from node.engine.factory import make_engine
from node.engine.openai_backend import OpenAIEngine, png_data_url
from node.engine.openai_server import EngineServer, decode_data_url
from node.engine.replay import ReplayEngine
from node.engine.tiny import TINY_MODEL_NAME
from node.engine.transformers_backend import TransformersEngine
from node.model.profiles import PROFILES
from node.model.prompt import build_prompt, question_text
from node.testing.loopback import LOOPBACK, free_port, http_json
from node.testing.synthetic import write_cr_study
from tests.helpers import assert_on_lesion, get, metric_value, sr_box, wait_for
from tests.reference import lesion_answer

SETTINGS = GenerationSettings(max_new_tokens=24)


def _serve(engine, port: int = 0, served_model: str = "qoq-med", **settings) -> EngineServer:
    server = EngineServer(LOOPBACK, port, engine, served_model, max_batch=4, **settings)
    server.start()
    return server


@pytest.fixture
def served_tiny(tiny_engine: TransformersEngine) -> Iterator[EngineServer]:
    server = _serve(tiny_engine)
    yield server
    server.stop()


def _openai(url: str, served_model: str, **settings) -> EngineConfig:
    """An openai backend config for the server at ``url`` serving ``served_model``."""
    return EngineConfig(backend="openai", openai={"url": url, "served_model": served_model, **settings})


def _client(port: int, **settings) -> OpenAIEngine:
    config = _openai(f"http://{LOOPBACK}:{port}/v1", "qoq-med", **{"timeout_seconds": 60, "retries": 0, **settings})
    return OpenAIEngine(config, PROFILES["qwen2.5-vl"])


def _requests() -> list[EngineRequest]:
    """Three studies: a grey CR as training pre-resized it, a two-image study and a text-only one."""
    cr = Image.linear_gradient("L").resize((476, 476))
    view = Image.new("L", (448, 448), 90)
    return [
        EngineRequest((cr,), build_prompt(question_text("Findings?", ["Pneumonia"]), 1), "cxr", SETTINGS),
        EngineRequest((cr, view), build_prompt("Compare.", image_count=2), "cxr", SETTINGS),
        EngineRequest((), "No image.", "*", SETTINGS),
    ]


def test_the_remote_engine_gives_the_local_engines_tokens(served_tiny: EngineServer,
                                                          tiny_engine: TransformersEngine) -> None:
    requests = _requests()
    local = [tiny_engine.generate([request])[0] for request in requests]
    remote = _client(served_tiny.port, max_concurrency=3).generate(requests)
    assert [r.text for r in remote] == [r.text for r in local]
    assert [r.prompt_tokens for r in remote] == [r.prompt_tokens for r in local]
    assert [r.completion_tokens for r in remote] == [r.completion_tokens for r in local]
    assert remote[0].prompt_tokens > 476 * 476 // 784  # the image reached the model at its size
    for result in remote:  # provenance: the served name, the engine behind it, the server; a test model
        assert result.is_test_result and result.model.startswith(TINY_MODEL_NAME)
        assert result.model.endswith(f" via {LOOPBACK}:{served_tiny.port}")


def test_forced_token_counts_reach_the_server(served_tiny: EngineServer, tiny_engine: TransformersEngine) -> None:
    """min_new_tokens (the benchmarks' fixed work) travels as min_tokens and is honoured."""
    forced = EngineRequest((Image.new("L", (448, 448)),), build_prompt("Findings?", 1), "*",
                           GenerationSettings(max_new_tokens=40, min_new_tokens=40))
    [remote] = _client(served_tiny.port).generate([forced])
    [local] = tiny_engine.generate([forced])
    assert remote.completion_tokens == local.completion_tokens == 40 and remote.text == local.text


def test_images_travel_as_lossless_png(served_tiny: EngineServer) -> None:
    image = Image.effect_noise((56, 84), 60).convert("L")
    assert np.array_equal(np.asarray(decode_data_url(png_data_url(image))), np.asarray(image))


def test_the_server_refuses_what_it_cannot_serve(served_tiny: EngineServer) -> None:
    base = f"http://{LOOPBACK}:{served_tiny.port}/v1"
    assert http_json(f"{base}/models")["data"][0]["id"] == "qoq-med"

    def post(body: dict) -> tuple[int, str]:
        try:
            http_json(f"{base}/chat/completions", json.dumps(body).encode())
        except Exception as error:  # urllib's HTTPError carries the status and the JSON error
            return error.code, json.loads(error.read())["error"]["message"]
        return 200, ""

    user = {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://example.org/x.png"}},
                                        {"type": "text", "text": "Findings?"}]}
    assert post({"model": "qoq-med", "messages": [user]}) == (400, "images must be base64 data: URLs "
                                                                   "(this server never fetches URLs)")
    assert post({"model": "other", "messages": [user]})[0] == 404
    assert post({"model": "qoq-med", "messages": []})[0] == 400
    user["content"][0]["image_url"]["url"] = png_data_url(Image.new("L", (300, 300)))
    user["content"][1]["text"] = "Findings? <image>"  # an image is a part of its own, never a marker in the text
    status, message = post({"model": "qoq-med", "messages": [user]})
    assert status == 400 and "may not hold '<image>'" in message


def test_engine_serve_answers_a_paused_body_408_and_closes() -> None:
    """A body that pauses ``body_idle_seconds`` (``http.body_idle_seconds``) is answered 408 as OpenAI's JSON
    error (not the 500 of a failed engine), and its connection closed at once."""
    server = _serve(ReplayEngine({"*": "No finding."}), body_idle_seconds=1)
    try:
        with socket.create_connection((LOOPBACK, server.port), timeout=10) as connection:
            connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 1000\r\n\r\n{\"model\": ")
            started, data = time.monotonic(), b""
            while chunk := connection.recv(65536):
                data += chunk
            assert time.monotonic() - started < 5
    finally:
        server.stop()
    head, _, answer = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"connection: close" in head.lower()
    assert json.loads(answer)["error"]["message"] == "request body paused over 1 s"


def test_engine_serve_holds_only_a_few_request_bodies_at_once() -> None:
    """A 256 MiB body limit on 192 body slots would let clients hold ~48 GiB: the server holds
    ``max_requests`` requests, and answers one more 503 (OpenAI's JSON error, Retry-After) before reading it."""
    server = _serve(ReplayEngine({"*": "No finding."}), max_requests=2)
    url = f"http://{LOOPBACK}:{server.port}/v1/chat/completions"
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000\r\n\r\n")
    slow = [socket.create_connection((LOOPBACK, server.port)) for _ in range(2)]
    try:
        for connection in slow:  # two bodies that have only begun to arrive
            connection.sendall(head + b'{"model": ')
        wait_for(lambda: server._requests.reading == 2, 5, what="the two requests held")
        answer = httpx.post(url, json={"model": "qoq-med", "messages": []}, timeout=10)
        assert answer.status_code == 503 and answer.headers["Retry-After"]
        assert answer.json()["error"]["message"] == "2 request bodies are being received; try again later"
    finally:
        for connection in slow:
            connection.close()
    try:  # their slots are given back
        assert wait_for(lambda: httpx.post(url, json={"model": "other"}, timeout=10).status_code == 404, 5)
    finally:
        server.stop()


def test_a_client_refuses_what_the_model_was_not_trained_on_before_sending(served_tiny: EngineServer) -> None:
    five = EngineRequest(tuple(Image.new("L", (300, 300)) for _ in range(5)), build_prompt("Findings?", 5), "*",
                         SETTINGS)
    with pytest.raises(ValueError, match="trained with at most 4"):
        _client(served_tiny.port).generate([five])
    ecg = EngineRequest((), build_prompt("Findings?", 0), "ecg", SETTINGS,
                        time_series=(np.zeros((8, 2500), np.float32),))
    with pytest.raises(ValueError, match="takes no ECG"):
        _client(served_tiny.port).generate([ecg])


class _Flaky(BaseHTTPRequestHandler):
    """A server that answers 503 (or a canned answer) as its ``script`` says, counting calls."""

    script: ClassVar[list[tuple[int, dict]]] = []
    calls: ClassVar[list[float]] = []

    def log_message(self, *args) -> None:
        pass

    def _answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        if status == 503:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._answer(200, {"data": [{"id": "qoq-med"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls.append(time.monotonic())
        status, body = self.script.pop(0) if self.script else (503, {"error": {"message": "overloaded"}})
        self._answer(status, body)


@pytest.fixture
def flaky() -> Iterator[type[_Flaky]]:
    handler = type("Flaky", (_Flaky,), {"script": [], "calls": []})
    server = ThreadingHTTPServer((LOOPBACK, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.port = server.server_address[1]
    yield handler
    server.shutdown()
    server.server_close()


ANSWER = {"model": "qoq-med", "choices": [{"message": {"content": "\\boxed{No finding}"}}],
          "usage": {"prompt_tokens": 400, "completion_tokens": 5}}
REQUEST = EngineRequest((Image.new("L", (448, 448)),), build_prompt("Findings?", 1), "*", SETTINGS)


def test_overload_is_retried_after_the_servers_retry_after(flaky) -> None:
    flaky.script[:] = [(503, {"error": {"message": "overloaded"}})] * 2 + [(200, ANSWER)]
    [result] = _client(flaky.port, retries=3).generate([REQUEST])
    assert result.text == "\\boxed{No finding}" and result.completion_tokens == 5
    assert not result.is_test_result  # a third-party server never claims to be a test engine
    assert len(flaky.calls) == 3 and flaky.calls[2] - flaky.calls[1] >= 0.9  # Retry-After: 1 was honoured


def test_spent_retries_make_the_engine_unavailable_and_a_4xx_fails_at_once(flaky) -> None:
    with pytest.raises(EngineUnavailable, match=r"HTTP 503: overloaded \(after 2 tries\)"):
        _client(flaky.port, retries=1).generate([REQUEST])
    flaky.calls.clear()
    flaky.script[:] = [(400, {"error": {"message": "prompt too long"}})]
    with pytest.raises(ValueError, match="refused the request: HTTP 400: prompt too long"):
        _client(flaky.port, retries=3).generate([REQUEST])
    assert len(flaky.calls) == 1


def test_a_server_that_resized_the_images_is_caught(flaky) -> None:
    flaky.script[:] = [(200, {**ANSWER, "usage": {"prompt_tokens": 100, "completion_tokens": 5}})]
    with pytest.raises(ValueError, match="resized the images"):
        _client(flaky.port).generate([REQUEST])  # 448² is 256 visual tokens; 100 prompt tokens cannot hold them


def test_configuration_mistakes_are_named(served_tiny: EngineServer, monkeypatch) -> None:
    config = _openai(f"http://{LOOPBACK}:{served_tiny.port}/v1", "qoq-32b")
    with pytest.raises(EngineLoadError, match=r"does not serve 'qoq-32b' \(it serves: qoq-med\)"):
        make_engine(config)
    with pytest.raises(ValueError, match=r"openai\.url and openai\.served_model required"):
        EngineConfig(backend="openai")
    keyless = NodeConfig(engine=_openai("http://x:1/v1", "m", api_key_env="QOQ_TEST_KEY"))  # loads: no env read
    assert config_problems(keyless, environ={}) == [
        "engine.openai: api_key_env names QOQ_TEST_KEY, which is not set in the environment"]
    with pytest.raises(ConfigError, match="QOQ_TEST_KEY, which is not set"):
        require_usable(keyless, environ={})
    monkeypatch.setenv("QOQ_TEST_KEY", "secret")
    assert config_problems(keyless) == []
    unreachable = _openai(f"http://{LOOPBACK}:{free_port()}/v1", "m", api_key_env="QOQ_TEST_KEY", retries=0)
    engine = make_engine(unreachable)  # a server that is not up yet does not stop the node from starting
    with pytest.raises(EngineUnavailable, match="cannot reach"):
        engine.generate([REQUEST])


def test_the_api_key_is_sent_as_a_bearer_token(monkeypatch) -> None:
    seen: list[str] = []

    class Handler(_Flaky):
        script: ClassVar[list[tuple[int, dict]]] = [(200, ANSWER)]
        calls: ClassVar[list[float]] = []

        def do_POST(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            super().do_POST()

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("QOQ_TEST_KEY", "s3cret")
        config = _openai(f"http://{LOOPBACK}:{server.server_address[1]}/v1", "qoq-med", api_key_env="QOQ_TEST_KEY")
        make_engine(config).generate([REQUEST])
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["Bearer s3cret"]


def test_check_says_whether_the_engine_server_answers(served_tiny: EngineServer, tmp_path: Path) -> None:
    def check(port: int, served: str = "qoq-med") -> subprocess.CompletedProcess:
        config = tmp_path / "node.yaml"
        config.write_text(f"engine: {{backend: openai, openai: {{url: 'http://{LOOPBACK}:{port}/v1', "
                          f"served_model: {served}}}}}\n")
        return subprocess.run([sys.executable, "-m", "node", "check", "--config", str(config)], capture_output=True,
                              text=True, timeout=60)

    ok = check(served_tiny.port)
    assert ok.returncode == 0 and f"engine server OK: http://{LOOPBACK}:{served_tiny.port}/v1 serves 'qoq-med'" \
        in ok.stdout
    down = check(free_port())
    assert down.returncode == 1 and "engine server NOT reachable now" in down.stdout  # the check fails
    wrong = check(served_tiny.port, "qoq-32b")
    assert wrong.returncode == 1 and "does not serve 'qoq-32b'" in wrong.stderr


def test_engine_serve_command_serves_the_configured_engine(tmp_path: Path, tiny_dir: Path,
                                                           tiny_engine: TransformersEngine, spawn) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(f"engine: {{backend: transformers, model: {tiny_dir}, device: cpu}}\n"
                      f"storage: {{root: {tmp_path / 'var'}}}\nlog: {{format: console}}\n")
    process = spawn([sys.executable, "-m", "node", "engine", "serve", "--config", str(config),
                     "--port", "0", "--served-model", "qoq-med"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    text=True)
    try:
        line = ""
        while "serving" not in line:
            line = process.stdout.readline()
            assert line or process.poll() is None, "engine serve exited"
        port = int(re.search(r":(\d+)/v1", line).group(1))
        assert TINY_MODEL_NAME in line
        [remote] = _client(port).generate(_requests()[:1])
        assert remote.text == tiny_engine.generate(_requests()[:1])[0].text
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 0


def test_a_node_waits_for_its_engine_server_and_reads_the_study_when_it_comes(make_node, tmp_path: Path,
                                                                              storescu) -> None:
    """The loop with a remote engine: the server is down when the study arrives, so the study waits
    (no attempt counted, engine_available 0); once the server is up the study is read, and the
    boxes the server's engine gave land on the lesion in the source image."""
    study = write_cr_study(tmp_path / "cr", size=512)
    source = pydicom.dcmread(study.files[0])
    port = free_port()
    node = make_node(engine={"backend": "openai", "openai": {"url": f"http://{LOOPBACK}:{port}/v1",
                                                             "served_model": "qoq-med", "retries": 0,
                                                             "timeout_seconds": 10}})
    assert storescu(node.scp.port, list(study.files)).returncode == 0
    wait_for(lambda: metric_value(node.metrics.render().decode(), "qoqnode_engine_available") == 0, timeout=30)
    wait_for(lambda: node.store.studies.summaries()[0].state == "stable", timeout=30)  # its quiet time, the engine away
    [summary] = node.store.studies.summaries()
    assert summary.state == "stable" and summary.attempts == 0
    assert get(node, "/readyz")[0] == 200  # the node still receives: the PACS can keep sending
    replay = ReplayEngine({"*": lesion_answer(source, "Mass")})
    server = _serve(replay, port)
    try:
        wait_for(lambda: node.store.studies.summaries()[0].state in {"queued", "complete"}, timeout=60)
    finally:
        server.stop()
    assert metric_value(node.metrics.render().decode(), "qoqnode_engine_available") == 1
    [version_dir] = (node.config.storage.root / "results" / study.study_uid).iterdir()
    sr = pydicom.dcmread(version_dir / "sr.dcm")
    assert b"replay (recorded responses; TEST RESULT" in (version_dir / "sr.dcm").read_bytes()  # provenance
    referenced, points = sr_box(sr)
    assert referenced == source.SOPInstanceUID
    assert_on_lesion(points, source)


class _Slow(BaseHTTPRequestHandler):
    """An engine server that takes a second per request and counts how many it holds at once."""

    lock = threading.Lock()
    open_now = 0
    most: ClassVar[list[int]] = [0]

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._answer({"data": [{"id": "qoq-med"}]})

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        cls = type(self)
        with cls.lock:
            cls.open_now += 1
            cls.most[0] = max(cls.most[0], cls.open_now)
        time.sleep(1.0)
        with cls.lock:
            cls.open_now -= 1
        self._answer(ANSWER)

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.mark.parametrize("batches_in_flight", [1, 3])
def test_batches_in_flight_let_new_studies_join_while_others_generate(make_node, tmp_path: Path,
                                                                       batches_in_flight: int, storescu) -> None:
    """With batch_size 1, one batch at a time sends one request at a time; three batches in flight
    keep three requests at the server at once, and every study still completes exactly once."""
    handler = type("Slow", (_Slow,), {"lock": threading.Lock(), "open_now": 0, "most": [0]})
    server = ThreadingHTTPServer((LOOPBACK, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        node = make_node(engine={"backend": "openai", "openai": {
                             "url": f"http://{LOOPBACK}:{server.server_address[1]}/v1", "served_model": "qoq-med",
                             "max_concurrency": 4}},
                         pipeline={"batch_size": 1, "batches_in_flight": batches_in_flight})
        studies = [write_cr_study(tmp_path / f"cr{i}", size=512) for i in range(3)]
        assert storescu(node.scp.port, [f for s in studies for f in s.files]).returncode == 0
        wait_for(lambda: len(node.store.studies.summaries()) == 3
                 and all(s.state in {"queued", "complete"} for s in node.store.studies.summaries()), timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert handler.most[0] == batches_in_flight
    assert all(s.attempts == 0 for s in node.store.studies.summaries())  # each read once, none retried
