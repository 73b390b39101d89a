"""The verdicts stage: a radiologist's final report against the node's answer — NegEx (:mod:`.negex`), the
task's labels found in the report (:mod:`.labels`), the concordance (:mod:`.concordance`), and the matching
of reports with answered studies (:mod:`.stage`)."""
