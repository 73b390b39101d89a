"""Findings + source headers → DICOM results and HL7 messages. Pure functions: no I/O."""
