"""Quality monitoring: what the node answered (:mod:`~node.quality.answers`), the figures over answers and
verdicts — concordance, drift, rejection (:mod:`~node.quality.figures`) — against a baseline
(:mod:`~node.quality.baseline`), exported to Prometheus at scrape time (:mod:`~node.quality.collector`) and
reported by ``qoq-node quality`` (:mod:`~node.quality.report`)."""
