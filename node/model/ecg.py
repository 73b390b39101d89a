"""The Omni model's ECG input: leads × samples at a rate (the first 5 s), as it was trained."""

ECG_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")
ECG_SAMPLES = 2500
ECG_RATE_HZ = 500.0
