"""Test peers and synthetic data, public like ``structlog.testing``: what the demo, the benchmarks and
the tests run the node against. Never imported by the node's own stages.

- ``loopback``: free ports on 127.0.0.1, JSON over HTTP, waiting for and stopping child processes.
- ``pacs``: a real Orthanc acting as the PACS, and a folder PACS (pynetdicom) when Orthanc is absent.
- ``ehr``: an MLLP listener acting as the EHR, answering as a test tells it.
- ``node_process``: ``qoq-node serve`` as a child process, with the replay engine's settings.
- ``synthetic``, ``synthetic_hl7``: studies and HL7 messages of fictitious patients.
"""
