"""What every configuration section shares: the error, the frozen strict base model, AE titles and names."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from node.errors import NodeError

AE_TITLE_PATTERN = r"^[\x20-\x5b\x5d-\x7e]{1,16}$"  # PS3.5 AE VR: no backslash, no control chars
_AE_TITLE = re.compile(AE_TITLE_PATTERN)

#: A destination's name: what logs, metrics and ``context.pacs`` call it.
NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class ConfigError(NodeError):
    """The configuration cannot be used; the message names the bad key and why."""


class Section(BaseModel):
    """A configuration section: frozen, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_ae_title(value: str) -> str:
    if not _AE_TITLE.match(value) or not value.strip():
        raise ValueError("an AE title is 1-16 printable characters, not all spaces, no backslash")
    return value.strip()


#: An AE title: checked here, and its pattern is in the JSON schema (the Helm chart's values schema).
AeTitle = Annotated[str, Field(json_schema_extra={"pattern": AE_TITLE_PATTERN}), AfterValidator(_check_ae_title)]
