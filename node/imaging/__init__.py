"""DICOM → model inputs, each with the exact geometry back to its source pixels."""
