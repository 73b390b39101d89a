"""``qoq-node evaluate``: local validation — the node's own path on a hospital's labelled studies, scored as
training scored the model, written as ``report.json`` and a self-contained ``report.html``."""
