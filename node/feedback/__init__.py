"""The explicit verdict of an integration (worklist, RIS, viewer plugin): ``POST /v1/feedback``
(:mod:`~node.feedback.api`) and ``qoq-node feedback`` share :func:`~node.feedback.submit.submit`; bearer tokens
come from a mounted secret (:mod:`node.ops.tokens`, as the STOW-RS receiver's do)."""
