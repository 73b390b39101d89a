"""The node's whole configuration as frozen, typed sections, loaded from YAML with environment overrides.

``load_config`` reads and validates it (never the disk beyond the file itself, nor the environment beyond
``QOQ_NODE__…``); ``config_problems`` says which files and variables it names are missing (or, a tokens secret,
not valid), for ``qoq-node check`` and the node's start.
"""

from node.config.base import AE_TITLE_PATTERN, AeTitle, ConfigError
from node.config.delivery import ClientTlsConfig, DestinationsConfig, DicomDestination, Hl7Destination
from node.config.dicom import DEFAULT_IGNORED_SOP_CLASSES, DicomConfig, TlsConfig
from node.config.dicomweb import DicomWebAuth, DicomWebDestination
from node.config.engine import EngineConfig, OpenAIOptions, TensorRtLlmOptions, TransformersOptions
from node.config.loading import ENV_PREFIX, RENAMED_KEYS, load_config
from node.config.node_config import NodeConfig
from node.config.problems import config_problems, require_usable
from node.config.sections import (
    ContextConfig,
    Hl7ListenerConfig,
    HttpConfig,
    ImagingConfig,
    LogConfig,
    PipelineConfig,
    ResultsConfig,
    RoutingConfig,
    StorageConfig,
    StudyConfig,
)

__all__ = [
    "AE_TITLE_PATTERN", "DEFAULT_IGNORED_SOP_CLASSES", "ENV_PREFIX", "RENAMED_KEYS", "AeTitle", "ClientTlsConfig",
    "ConfigError", "ContextConfig", "DestinationsConfig", "DicomConfig", "DicomDestination", "DicomWebAuth",
    "DicomWebDestination", "EngineConfig",
    "Hl7Destination", "Hl7ListenerConfig", "HttpConfig", "ImagingConfig", "LogConfig", "NodeConfig",
    "OpenAIOptions", "PipelineConfig", "ResultsConfig", "RoutingConfig", "StorageConfig", "StudyConfig",
    "TensorRtLlmOptions", "TlsConfig", "TransformersOptions", "config_problems", "load_config", "require_usable",
]
