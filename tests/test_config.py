"""Configuration: the shipped file, environment overrides, and errors that name the bad key."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from node.app import Node
from node.config import RENAMED_KEYS, ConfigError, NodeConfig, config_problems, load_config
from node.ops.http import BODY_IDLE_SECONDS

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "conf" / "node.yaml"


def test_shipped_config_is_valid_and_matches_the_defaults() -> None:
    shipped, defaults = load_config(SHIPPED, environ={}), NodeConfig()
    # the file's paths are the file's folder's: from the repository root they are the defaults' places
    assert shipped.storage.root == (REPO / defaults.storage.root).resolve()
    assert shipped.routing.rules is defaults.routing.rules is None  # the rules the node ships with
    assert shipped.model_copy(update={"storage": defaults.storage}) == defaults


def test_shipped_config_has_every_key_of_the_model() -> None:
    import yaml

    shipped = yaml.safe_load(SHIPPED.read_text())
    defaults = NodeConfig().model_dump(mode="json")

    def keys(mapping: dict, prefix: str = "") -> set[str]:
        out = set()
        for key, value in mapping.items():
            out.add(prefix + key)
            if isinstance(value, dict):
                out |= keys(value, prefix + key + ".")
        return out

    assert keys(shipped) == keys(defaults)


def test_environment_overrides_nested_keys_and_lists() -> None:
    config = load_config(
        SHIPPED,
        environ={
            "QOQ_NODE__DICOM__PORT": "11113",
            "QOQ_NODE__DICOM__ALLOWED_CALLING_AE_TITLES": "[PACS1, PACS2]",
            "QOQ_NODE__STUDY__STABLE_SECONDS": "2.5",
            "UNRELATED": "x",
        },
    )
    assert config.dicom.port == 11113
    assert config.dicom.allowed_calling_ae_titles == ["PACS1", "PACS2"]
    assert config.study.stable_seconds == 2.5


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"QOQ_NODE__DICOM__PORT": "70000"}, "dicom.port"),
        ({"QOQ_NODE__DICOM__PORT": "-1"}, "dicom.port"),
        ({"QOQ_NODE__DICOM__AE_TITLE": "A_TITLE_THAT_IS_TOO_LONG"}, "dicom.ae_title"),
        ({"QOQ_NODE__DICOM__ALLOWED_CALLING_AE_TITLES": "['BAD\\\\AE']"}, "dicom.allowed_calling_ae_titles"),
        ({"QOQ_NODE__STORAGE__MIN_FREE_BYTES": "-1"}, "storage.min_free_bytes"),
        ({"QOQ_NODE__STUDY__STABLE_SECONDS": "0"}, "study.stable_seconds"),
        ({"QOQ_NODE__DICOM__TLS__ENABLED": "true"}, "certificate is required"),
        ({"QOQ_NODE__DICOM__TYPO": "1"}, "dicom.typo: unknown key"),
        ({"QOQ_NODE__LOG__LEVEL": "LOUD"}, "log.level"),
        ({"QOQ_NODE__DESTINATIONS__DICOM": "[{name: pacs, ae_title: PACS, host: h, port: 0}]"},
         "destinations.dicom.0.port"),
        ({"QOQ_NODE__DESTINATIONS__HL7": "[{name: 'bad name', host: h, port: 2575}]"}, "destinations.hl7.0.name"),
        ({"QOQ_NODE__DESTINATIONS__DICOM": "[{name: a, ae_title: P, host: h, port: 104}]",
          "QOQ_NODE__DESTINATIONS__HL7": "[{name: a, host: h, port: 2575}]"}, "destination names must be unique: a"),
        ({"QOQ_NODE__PIPELINE__MAX_ATTEMPTS": "0"}, "pipeline.max_attempts"),
    ],
)
def test_bad_values_name_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("\\", "\\\\")):
        load_config(SHIPPED, environ=environ)


def test_the_request_body_pause_is_a_setting_within_bounds() -> None:
    """http.body_idle_seconds: 30 s by default (the web server's own default), 1 s to an hour; out of bounds
    refused with the key and the variable."""
    assert NodeConfig().http.body_idle_seconds == BODY_IDLE_SECONDS == 30
    assert load_config(SHIPPED, environ={"QOQ_NODE__HTTP__BODY_IDLE_SECONDS": "2.5"}).http.body_idle_seconds == 2.5
    for bad, bound in (("0.5", "greater than or equal to 1"), ("3601", "less than or equal to 3600"), ("soon", "")):
        with pytest.raises(ConfigError, match=f"^QOQ_NODE__HTTP__BODY_IDLE_SECONDS: http.body_idle_seconds: .*{bound}"):
            load_config(SHIPPED, environ={"QOQ_NODE__HTTP__BODY_IDLE_SECONDS": bad})


def test_files_are_checked_by_config_problems_not_by_loading(tmp_path: Path) -> None:
    """The models never read the disk or the environment: a configuration naming files that are not there
    loads (``qoq-node studies`` works anywhere); ``config_problems`` names each, and the node's start refuses it."""
    missing = tmp_path / "missing"
    config = load_config(None, environ={
        "QOQ_NODE__DICOM__TLS__ENABLED": "true",
        "QOQ_NODE__DICOM__TLS__CERTIFICATE": str(SHIPPED),
        "QOQ_NODE__DICOM__TLS__PRIVATE_KEY": str(missing / "node.key"),
        "QOQ_NODE__DESTINATIONS__DICOM": f"[{{name: pacs, ae_title: PACS, host: h, port: 104, "
                                         f"tls: {{enabled: true, ca: {missing / 'ca.pem'}}}}}]",
        "QOQ_NODE__ENGINE__BACKEND": "openai",
        "QOQ_NODE__ENGINE__OPENAI": "{url: 'http://x:1/v1', served_model: m, api_key_env: QOQ_TEST_UNSET_KEY}",
        "QOQ_NODE__ENGINE__REPLAY_RESPONSES": str(missing / "replay.json"),
    })
    assert config_problems(config, environ={}) == [
        f"dicom.tls: private_key {missing / 'node.key'} is not a readable file",
        f"destinations.dicom.0.tls: ca {missing / 'ca.pem'} is not a readable file",
        f"engine: replay_responses {missing / 'replay.json'} is not a readable file",
        "engine.openai: api_key_env names QOQ_TEST_UNSET_KEY, which is not set in the environment",
    ]
    assert config_problems(config, environ={"QOQ_TEST_UNSET_KEY": "k"})[-1].startswith("engine: replay_responses")
    with pytest.raises(ConfigError, match=r"private_key .* is not a readable file"):
        Node(config)
    assert config_problems(load_config(SHIPPED, environ={})) == []


def test_check_and_serve_report_missing_files(tmp_path: Path) -> None:
    node_yaml = tmp_path / "node.yaml"
    node_yaml.write_text(f"storage: {{root: {tmp_path / 'var'}}}\n"
                         "dicom: {tls: {enabled: true, certificate: node.pem, private_key: node.key}}\n")
    for command in (["check"], ["serve"]):
        run = subprocess.run([sys.executable, "-m", "node", *command, "--config", str(node_yaml)],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 1, run.stderr
        assert f"dicom.tls: certificate {tmp_path / 'node.pem'} is not a readable file; " \
               f"dicom.tls: private_key {tmp_path / 'node.key'} is not a readable file" in run.stderr
    assert not (tmp_path / "var").exists()  # refused before anything was made


@pytest.mark.parametrize(("old", "new"), list(RENAMED_KEYS.items()))
def test_renamed_keys_are_refused_with_the_new_name(tmp_path: Path, old: str, new: str) -> None:
    section, key = old.split(".")
    node_yaml = tmp_path / "node.yaml"
    node_yaml.write_text(f"{section}:\n  {key}: 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{node_yaml}: {old} was renamed {new}")):
        load_config(node_yaml, environ={})
    variable = f"QOQ_NODE__{section.upper()}__{key.upper()}"
    with pytest.raises(ConfigError, match=re.escape(
            f"{variable}: {old} was renamed {new} (QOQ_NODE__{new.upper().replace('.', '__')})")):
        load_config(None, environ={variable: "1"})
    with pytest.raises(ConfigError, match=re.escape(f"QOQ_NODE__{section.upper()}: {old} was renamed {new}")):
        load_config(None, environ={f"QOQ_NODE__{section.upper()}": f"{{{key}: 1}}"})


def test_timeout_is_named_in_seconds() -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "QOQ_NODE__ENGINE__TIMEOUT_S: engine.timeout_s was renamed engine.openai.timeout_seconds")):
        load_config(None, environ={"QOQ_NODE__ENGINE__TIMEOUT_S": "30"})
    config = load_config(None, environ={"QOQ_NODE__ENGINE__OPENAI__TIMEOUT_SECONDS": "30"})
    assert config.engine.openai.timeout_seconds == 30


def test_a_bad_environment_variable_is_blamed_on_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(SHIPPED, environ={"QOQ_NODE__DICOM__PORT": "abc"})
    assert str(raised.value).startswith("QOQ_NODE__DICOM__PORT: dicom.port: ")
    assert str(SHIPPED) not in str(raised.value)
    with pytest.raises(ConfigError, match=r"^QOQ_NODE__DICOM: dicom\.port: "):
        load_config(SHIPPED, environ={"QOQ_NODE__DICOM": "{port: abc}"})
    with pytest.raises(ConfigError, match=r"^QOQ_NODE__DICOM__PORT is not valid YAML"):
        load_config(SHIPPED, environ={"QOQ_NODE__DICOM__PORT": "[unclosed"})
    # the file's own mistakes stay the file's; a check over keys both set names both
    bad = tmp_path / "node.yaml"
    bad.write_text("dicom: {port: abc}\n")
    with pytest.raises(ConfigError) as raised:
        load_config(bad, environ={"QOQ_NODE__HTTP__PORT": "70000"})
    assert str(raised.value).split("; ") == [
        f"{bad}: dicom.port: Input should be a valid integer, unable to parse string as an integer",
        "QOQ_NODE__HTTP__PORT: http.port: Input should be less than or equal to 65535"]
    with pytest.raises(ConfigError, match=re.escape(
            f"{SHIPPED} with QOQ_NODE__DICOM__TLS__ENABLED: dicom.tls: certificate is required")):
        load_config(SHIPPED, environ={"QOQ_NODE__DICOM__TLS__ENABLED": "true"})


def test_yaml_errors_are_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("dicom: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_check_command_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "node", "check", "--config", str(SHIPPED)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "configuration OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("dicom:\n  port: not-a-port\n")
    failed = subprocess.run([sys.executable, "-m", "node", "check", "--config", str(bad)],
                            capture_output=True, text=True)
    assert failed.returncode == 1
    assert "dicom.port" in failed.stderr


def test_paths_in_the_file_are_relative_to_the_file_and_the_cli_never_makes_an_empty_database(
        tmp_path: Path) -> None:
    """``qoq-node studies --config /elsewhere/node.yaml`` once made an empty ./var/state.db and listed
    nothing; paths in a file are the file's, and a missing database is an error that names it."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "node.yaml").write_text("storage: {root: data}\nrouting: {rules: rules.yaml}\n"
                                         "dicom: {tls: {enabled: false, certificate: certs/node.pem}}\n")
    config = load_config(elsewhere / "node.yaml", environ={"QOQ_NODE__ENGINE__CACHE_DIR": "cache"})
    assert config.storage.root == elsewhere / "data" and config.routing.rules == elsewhere / "rules.yaml"
    assert config.dicom.tls.certificate == elsewhere / "certs" / "node.pem"
    assert config.engine.cache_dir == Path("cache")  # the environment's stay the working directory's
    run = subprocess.run([sys.executable, "-m", "node", "studies", "--config", str(elsewhere / "node.yaml")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert run.returncode == 1 and f"no state database at {elsewhere / 'data' / 'state.db'}" in run.stderr
    assert not (tmp_path / "var").exists() and not (elsewhere / "data").exists()
