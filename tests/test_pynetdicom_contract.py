"""The node's seams into pynetdicom's internals (node/ingest/pynetdicom_patches/) against the installed
pynetdicom: one contract per seam, failing when pynetdicom changes what the seam reaches into, and the gate that
refuses a pynetdicom the seams were not tested with."""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import queue
import socketserver
import subprocess
import sys
import threading
import tomllib
import types
from pathlib import Path

import pynetdicom
import pytest
from pynetdicom import AE, _config, fsm
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.timer import Timer
from pynetdicom.transport import AssociationSocket, ThreadedAssociationServer

from node.ingest import pynetdicom_patches
from node.ingest.pynetdicom_patches import ae, association, dimse, dul, transport
from tests.helpers import loopback_settings

REPO = Path(__file__).resolve().parent.parent


def _resolve(name: str) -> object:
    """The object a dotted name names: the longest importable module, then attributes."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for attribute in parts[split:]:
            found = getattr(found, attribute)
        return found
    raise LookupError(name)


def _source(name: str) -> str:
    return inspect.getsource(_resolve(name))  # type: ignore[arg-type]


def _assert_relies_on(seam: types.ModuleType) -> None:
    """Every pynetdicom function ``seam`` was written against has the source it had then."""
    assert seam.RELIES_ON
    for name, digest in seam.RELIES_ON.items():
        found = hashlib.sha256(_source(name).encode()).hexdigest()[:len(digest)]
        assert found == digest, (f"pynetdicom {pynetdicom.__version__} changed {name}, which {seam.__name__} "
                                 "reaches into: review the seam against it, then record its new digest")


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_ae_seam_the_association_limit_counts_active_associations() -> None:
    _assert_relies_on(ae)
    assert isinstance(inspect.getattr_static(AE, "active_associations"), property)
    assert "self.assoc.ae.active_associations" in _source("pynetdicom.acse.ACSE._negotiate_as_acceptor")
    counting = ae.CountingAE("CONTRACT", lambda: [])
    assert counting.active_associations == [] and counting.ae_title == "CONTRACT"


def test_transport_seam_accept_then_a_thread_per_connection() -> None:
    _assert_relies_on(transport)
    # process_request runs on the accept thread and starts the connection's thread, which runs finish_request
    assert ThreadedAssociationServer.process_request is socketserver.ThreadingMixIn.process_request
    assert _parameters(ThreadedAssociationServer.process_request) == ["self", "request", "client_address"]
    assert _parameters(ThreadedAssociationServer.finish_request) == ["self", "request", "client_address"]
    assert "self.finish_request(request, client_address)" in _source(
        "pynetdicom.transport.ThreadedAssociationServer.process_request_thread")
    assert "self.ssl_context.wrap_socket(" in _source("pynetdicom.transport.AssociationServer.get_request")
    assert isinstance(inspect.getattr_static(ThreadedAssociationServer, "ssl_context"), property)
    assert callable(ThreadedAssociationServer.shutdown_request)


def test_dul_seam_poll_interval_timers_and_socket() -> None:
    _assert_relies_on(dul)
    loop = _source("pynetdicom.dul.DULServiceProvider.run_reactor")
    assert "time.sleep(self._run_loop_delay)" in loop
    assert "if self._process_recv_primitive():" in loop and "self._idle_timer.restart()" in loop
    init = _source("pynetdicom.dul.DULServiceProvider.__init__")
    assert "self._run_loop_delay = " in init and "self._idle_timer = Timer(" in init
    assert "self.artim_timer = Timer(" in init and "self.socket" in init
    assert _parameters(DULServiceProvider._process_recv_primitive) == ["self"]
    timer = Timer(1)
    timer.start()
    assert isinstance(timer._start_time, float)
    timer.timeout = 2  # the request timer's timeout is settable
    assert "self.socket: socket.socket | None" in inspect.getsource(AssociationSocket.__init__)
    # a PDU's header is read alone, then its body whole; a header cut short is a closed transport, said nothing of
    read = _source("pynetdicom.dul.DULServiceProvider._read_pdu_data")
    assert read.index("self.socket.recv(6)") < read.index("self.socket.recv(pdu_length)")
    assert "except struct.error:" in read and "# LOGGER.error(" in read
    assert "return bytestream" in _source("pynetdicom.transport.AssociationSocket.recv")


def test_association_seam_the_reactor_copy_mirrors_pynetdicoms() -> None:
    _assert_relies_on(association)  # the copy in association.py follows this source of _run_reactor
    assert "self._run_reactor()" in _source("pynetdicom.association.Association.run_reactor")
    acceptor = Association(AE(), "acceptor")
    for name in ("_is_paused", "_kill", "_reactor_checkpoint", "_serve_request", "is_established", "is_released",
                 "is_aborted", "network_timeout_response", "kill", "release", "abort"):
        assert hasattr(acceptor, name), name
    assert isinstance(acceptor.dimse.msg_queue, queue.Queue)
    for name in ("is_release_requested", "send_release", "is_aborted"):
        assert callable(getattr(acceptor.acse, name)), name
    for name in ("receive_pdu", "is_alive", "idle_timer_expired"):
        assert callable(getattr(acceptor.dul, name)), name
    # the thread runs run_reactor as its target (Thread.run), which closes some sockets with no EVT_CONN_CLOSE
    assert "threading.Thread.__init__(self, target=make_target(self.run_reactor))" in _source(
        "pynetdicom.association.Association.__init__")
    assert Association.run is threading.Thread.run
    run_reactor = _source("pynetdicom.association.Association.run_reactor")
    assert "self._server.shutdown_request(sock.socket)" in run_reactor
    # an acceptor waits for its A-ASSOCIATE-RQ on the DUL's queue; None there is the timeout
    assert "primitive = self.dul.receive_pdu(wait=True, timeout=self.acse_timeout)" in run_reactor
    assert "if primitive is None:" in run_reactor
    # a send pauses the loop (clears the checkpoint, waits for _is_paused), then takes its response off the queue
    for send in ("send_c_store", "send_c_find"):
        source = _source(f"pynetdicom.association.Association.{send}")
        assert (source.index("self._reactor_checkpoint.clear()") < source.index("while not self._is_paused:")
                < source.index("self.dimse.send_msg(")), send
    # a requestor's EVT_CONN_OPEN (node.ingest.nodelay) fires before its A-ASSOCIATE-RQ, an acceptor's before it starts
    connect = _source("pynetdicom.transport.AssociationSocket.connect")
    assert connect.index("evt.EVT_CONN_OPEN") < connect.index('primitive.result = "Evt2"')
    handle = _source("pynetdicom.transport.RequestHandler.handle")
    assert handle.index("evt.EVT_CONN_OPEN") < handle.index("assoc.start()")
    # a peer's abort ends a waiting send with an empty message (AA-3); the node's own ends in AR-5, which puts none
    assert "assoc.dimse.msg_queue.put((None, None))" in _source("pynetdicom.fsm.AA_3")
    assert "msg_queue" not in _source("pynetdicom.fsm.AR_5") + _source(
        "pynetdicom.association.Association._abort_blocking")
    assert "if rsp is None:" in _source("pynetdicom.association.Association._wrap_find_responses")
    association.wake_senders(acceptor)
    assert acceptor.dimse.get_msg(block=True) == (None, None)
    association.stop_waiting_for_request(acceptor)
    assert acceptor.dul.receive_pdu(wait=True, timeout=1) is None and acceptor.dul.to_user_queue.empty()
    ended: list[str] = []
    acceptor.run = types.MethodType(lambda self: None, acceptor)  # type: ignore[method-assign]  # (not started here)
    association.after_run(acceptor, lambda: ended.append("ended"))
    acceptor.run()
    assert ended == ["ended"]


def test_dimse_seam_a_c_store_dataset_goes_to_the_message_file() -> None:
    _assert_relies_on(dimse)
    assert _parameters(_resolve("pynetdicom.dimse.DIMSEServiceProvider.receive_primitive")) == ["self", "primitive"]
    assert "self.message.decode_msg(primitive, self.assoc)" in _source(
        "pynetdicom.dimse.DIMSEServiceProvider.receive_primitive")
    decode = _source("pynetdicom.dimse_messages.DIMSEMessage.decode_msg")
    assert "if self._data_set_file:" in decode
    assert "self._data_set_file.write(data[1:])" in decode and "self._data_set_file.file.flush()" in decode
    assert "primitive._dataset_file = self._data_set_file" in _source(
        "pynetdicom.dimse_messages.DIMSEMessage.message_to_primitive")
    store = _source("pynetdicom.service_class.StorageServiceClass.SCP")
    assert "req._dataset_file.close()" in store and "os.unlink(req._dataset_file.name)" in store
    acceptor = Association(AE(), "acceptor")
    assert acceptor.dimse.message is None and isinstance(acceptor._accepted_cx, dict)
    fragment = P_DATA()
    fragment.presentation_data_value_list = [[1, b"\x00"]]
    assert fragment.presentation_data_value_list == [[1, b"\x00"]]
    # P-DATA is decoded inside the DUL's state machine; an invalid PDU (event 19) in Sta6 is aborted (AA-8)
    assert "dul.assoc.dimse.receive_primitive(" in _source("pynetdicom.fsm.DT_2")
    assert fsm.TRANSITION_TABLE[(dimse.INVALID_PDU, "Sta6")] == "AA-8"
    assert "dul._send(pdu)" in _source("pynetdicom.fsm.AA_8") and isinstance(acceptor.dul.event_queue, queue.Queue)


def test_gate_refuses_an_untested_pynetdicom(monkeypatch: pytest.MonkeyPatch) -> None:
    pynetdicom_patches.check_version()  # the installed one is tested
    for untested in ("3.1.0", "3.0.3", "2.0.2", "4.0.0", "unknown"):
        with pytest.raises(pynetdicom_patches.UntestedPynetdicom,
                           match=rf"pynetdicom {untested} is installed.*tested with pynetdicom >=3\.0\.4,<3\.1"):
            pynetdicom_patches.check_version(untested)
    monkeypatch.setattr(pynetdicom, "__version__", "3.1.0")
    with pytest.raises(pynetdicom_patches.UntestedPynetdicom, match=r"pynetdicom 3\.1\.0 is installed"):
        pynetdicom_patches.prepare()


def test_the_gate_tests_the_range_pyproject_pins() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = [d.split("#")[0].replace(" ", "") for d in project["dependencies"] if d.startswith("pynetdicom")]
    assert pinned == [f"pynetdicom{pynetdicom_patches.TESTED_RANGE}"]


def test_process_settings_are_set_once_idempotently() -> None:
    pynetdicom_patches.configure_process()
    pynetdicom_patches.configure_process()
    assert _config.UNRESTRICTED_STORAGE_SERVICE is True and _config.LOG_HANDLER_LEVEL == "none"
    # received command sets' UIDs pass pynetdicom's validator, whatever their length (the node checks them)
    assert '_config.VALIDATORS["UI"](value)' in inspect.getsource(pynetdicom.utils.set_uid)
    assert _config.VALIDATORS["UI"]("1.2." + "3" * 66) == (True, "")


def test_serve_refuses_to_start_on_an_untested_pynetdicom(tmp_path: Path) -> None:
    env = {**os.environ, **loopback_settings(tmp_path / "var")}
    serve = ("import sys, pynetdicom; pynetdicom.__version__ = '3.1.0'; from node.cli import main; "
             "sys.exit(main(['serve']))")
    run = subprocess.run([sys.executable, "-c", serve], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 1
    assert "cannot start: pynetdicom 3.1.0 is installed" in run.stderr and ">=3.0.4,<3.1" in run.stderr
