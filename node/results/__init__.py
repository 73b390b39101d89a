"""Findings + source headers → DICOM results and HL7 messages. Pure functions: no I/O."""

import warnings

# highdicom warns about unusual person names *quoting the name*: a patient's name must never
# reach a log, so that warning is silenced for the whole process.
warnings.filterwarnings("ignore", message=r"The string .* is unlikely to represent the intended person name")
