"""The QoQ-Med model family's facts: its families' profiles, the training's pre-resize and the
processor's grid (:mod:`node.model.resize`), and Omni's ECG input layout (:mod:`node.model.ecg`).

A leaf: imported by imaging (which makes the inputs) and by the engine (which runs the model), it
imports neither, nor any other stage.
"""
