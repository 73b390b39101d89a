"""Configuration: the shipped file, environment overrides, and errors that name the bad key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from node.config import ConfigError, NodeConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "conf" / "node.yaml"


def test_shipped_config_is_valid_and_matches_the_defaults() -> None:
    shipped, defaults = load_config(SHIPPED, environ={}), NodeConfig()
    # the file's paths are the file's folder's: from the repository root they are the defaults' places
    assert shipped.storage.root == (REPO / defaults.storage.root).resolve()
    assert shipped.routing.rules == (REPO / defaults.routing.rules).resolve()
    assert shipped.model_copy(update={"storage": defaults.storage, "routing": defaults.routing}) == defaults


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


def test_tls_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"private_key .* is not a readable file"):
        load_config(None, environ={
            "QOQ_NODE__DICOM__TLS__ENABLED": "true",
            "QOQ_NODE__DICOM__TLS__CERTIFICATE": str(SHIPPED),
            "QOQ_NODE__DICOM__TLS__PRIVATE_KEY": str(tmp_path / "missing.key"),
        })


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
