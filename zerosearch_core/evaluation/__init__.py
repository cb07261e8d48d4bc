"""Evaluation: benchmark scoring with real search (:mod:`.benchmarks`), the card and plot a person reads (:mod:`.card`),
and the experiment plans and results tables built from many runs (:mod:`.experiments`)."""
