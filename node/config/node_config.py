"""The whole configuration: every section, and the checks that span sections."""

from __future__ import annotations

from pydantic import model_validator

from node.config.base import Section
from node.config.delivery import DestinationsConfig
from node.config.dicom import DicomConfig
from node.config.dicomweb import DicomWebConfig
from node.config.engine import EngineConfig
from node.config.quality import FeedbackConfig, QualityConfig
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


class NodeConfig(Section):
    """The whole node configuration (``conf/node.yaml``)."""

    dicom: DicomConfig = DicomConfig()
    dicomweb: DicomWebConfig = DicomWebConfig()
    storage: StorageConfig = StorageConfig()
    study: StudyConfig = StudyConfig()
    http: HttpConfig = HttpConfig()
    log: LogConfig = LogConfig()
    routing: RoutingConfig = RoutingConfig()
    imaging: ImagingConfig = ImagingConfig()
    engine: EngineConfig = EngineConfig()
    results: ResultsConfig = ResultsConfig()
    pipeline: PipelineConfig = PipelineConfig()
    destinations: DestinationsConfig = DestinationsConfig()
    hl7_listener: Hl7ListenerConfig = Hl7ListenerConfig()
    context: ContextConfig = ContextConfig()
    quality: QualityConfig = QualityConfig()
    feedback: FeedbackConfig = FeedbackConfig()

    @model_validator(mode="after")
    def _context_pacs_is_a_destination(self) -> NodeConfig:
        names = [d.name for d in self.destinations.dicom] + [d.name for d in self.destinations.dicomweb]
        if self.context.pacs is not None and self.context.pacs not in names:
            raise ValueError(f"context.pacs names {self.context.pacs!r}, which is not a destinations.dicom or "
                             "destinations.dicomweb entry")
        return self
