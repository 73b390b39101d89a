"""A DICOM ECG waveform → its leads by name, in millivolts, and the sampling rate.

Leads are found by the labels of their channel definitions (Channel Source's code meaning, e.g.
"Lead I (Einthoven)", "Lead aVR", else the Channel Label), never by position: vendors store the
twelve leads in different orders. Values are physical (pydicom's ``waveform_array`` applies the
channel sensitivity, correction and baseline) and scaled to mV from the channel's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

from node.imaging.decode import ImagingError

_UNITS_TO_MV = {"uV": 1e-3, "mV": 1.0, "V": 1e3}
_STANDARD_NAMES = {name.upper(): name for name in
                   ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")}


def lead_name(label: str) -> str:
    """'Lead I (Einthoven)' → 'I'; 'Lead aVR' → 'aVR'; 'AVR' → 'aVR'; other labels stripped as they are."""
    name = label.replace("Lead", "").split("(")[0].strip()
    return _STANDARD_NAMES.get(name.upper(), name)


@dataclass(frozen=True)
class Waveform:
    """The rhythm leads of one ECG instance."""

    sop_instance_uid: str
    leads: dict[str, np.ndarray]  # lead name → samples in mV
    rate_hz: float

    @property
    def samples(self) -> int:
        """Samples per lead."""
        return len(next(iter(self.leads.values()))) if self.leads else 0


def read_waveform(path: Path) -> Waveform:
    """The rhythm leads of the ECG at ``path`` (the first multiplex group that is not a median beat);
    :class:`ImagingError` when it has none or cannot be read."""
    try:
        ds = pydicom.dcmread(path)
        for index, group in enumerate(ds.WaveformSequence):
            if str(group.get("MultiplexGroupLabel", "")).upper() == "MEDIAN BEAT":
                continue
            signals = ds.waveform_array(index)
            leads = {}
            for channel, definition in enumerate(group.ChannelDefinitionSequence):
                source = definition.get("ChannelSourceSequence")
                label = source[0].get("CodeMeaning", "") if source else ""
                units = definition.ChannelSensitivityUnitsSequence[0].CodeValue if definition.get(
                    "ChannelSensitivityUnitsSequence") else "uV"
                name = lead_name(str(label or definition.get("ChannelLabel", "")))
                leads[name] = signals[:, channel].astype(np.float64) * _UNITS_TO_MV.get(units, 1e-3)
            return Waveform(str(ds.SOPInstanceUID), leads, float(group.SamplingFrequency))
    except Exception as exc:  # pydicom raises many types for a malformed waveform
        raise ImagingError(f"cannot read the waveform of {path.name}: {type(exc).__name__}") from exc
    raise ImagingError(f"{path.name} has no rhythm waveform (only median beats or none)")
