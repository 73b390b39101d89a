"""A DICOM 12-lead ECG → the signal QoQ-Med-Omni was trained on.

Training (DDVD233/QoQ_Med ``verl/utils/dataset.py``, ``process_time_series``) read each record's
physical signal (mV), resampled it to 500 Hz with an FFT (``scipy.signal.resample``) when its rate
differed, kept the first 2,500 samples (5 s), zero-padded a shorter one, and took leads I, II,
V1–V6. The node does the same from a DICOM waveform, finding the leads by their labels, with its own
numpy copy of that Fourier resampling (a test holds it to SciPy's) so air-gapped hosts need no SciPy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from node.imaging.decode import ImagingError
from node.imaging.waveform import read_waveform
from node.model.ecg import ECG_LEADS, ECG_RATE_HZ, ECG_SAMPLES


@dataclass(frozen=True)
class SignalInput:
    """One ECG as the model gets it, and where it came from."""

    signal: np.ndarray  # float32 [len(ECG_LEADS), ECG_SAMPLES], mV at ECG_RATE_HZ
    path: Path  # the stored waveform instance
    sop_instance_uid: str
    source_rate_hz: float
    source_samples: int

    @property
    def shape_text(self) -> str:
        """'8 leads × 2500 samples @ 500 Hz (from 1000 Hz, 10000 samples)'."""
        leads, samples = self.signal.shape
        return (f"{leads} leads × {samples} samples @ {ECG_RATE_HZ:g} Hz "
                f"(from {self.source_rate_hz:g} Hz, {self.source_samples} samples)")

    def describe(self) -> dict[str, Any]:
        """The input for people (``qoq-node infer --json``): kind, source and shape."""
        leads, samples = self.signal.shape
        return {"kind": "time-series", "sop_instance_uid": self.sop_instance_uid, "leads": leads,
                "samples": samples, "shape": self.shape_text}


def fourier_resample(signal: np.ndarray, samples: int) -> np.ndarray:
    """``signal`` (real, time along axis 0) resampled to ``samples`` in the frequency domain, as
    ``scipy.signal.resample`` does: the one-sided spectrum cut or zero-extended, the unpaired
    Nyquist bin of an even length doubled (down) or halved (up), scaled by the length ratio."""
    length = len(signal)
    kept = min(samples, length)
    spectrum = np.fft.rfft(signal, axis=0)[: kept // 2 + 1]
    if kept % 2 == 0 and samples != length:
        spectrum[kept // 2] *= 2 if samples < length else 0.5
    return np.fft.irfft(spectrum * (samples / length), n=samples, axis=0)


def ecg_signal(path: Path) -> SignalInput:
    """The Omni model's input from the 12-lead ECG at ``path``; :class:`ImagingError` when a lead is missing."""
    waveform = read_waveform(path)
    missing = [name for name in ECG_LEADS if name not in waveform.leads]
    if missing:
        raise ImagingError(f"{path.name} lacks leads {missing} that the model takes")
    data = np.stack([waveform.leads[name] for name in ECG_LEADS], axis=1)  # [samples, leads]
    if waveform.rate_hz != ECG_RATE_HZ:
        data = fourier_resample(data, int((ECG_RATE_HZ / waveform.rate_hz) * len(data)))
    data = data[:ECG_SAMPLES]
    if len(data) < ECG_SAMPLES:
        data = np.vstack((data, np.zeros((ECG_SAMPLES - len(data), data.shape[1]))))
    return SignalInput(np.ascontiguousarray(data.T, dtype=np.float32), path, waveform.sop_instance_uid,
                       waveform.rate_hz, waveform.samples)
