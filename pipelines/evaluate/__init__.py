"""``tracemill eval``: how good are the labels.

- ``scores.py``: first-error F1 (ProcessBench's metric) and step accuracy, on Arrow tables or lists;
- ``labels.py``: ``eval labels RUN``, every strategy of a run against the sim's exact truth;
- ``processbench.py``: ``eval processbench``, a verifier (arith claims, MC labels of a run, consensus, a
  trained PRM) against ProcessBench's human labels.
"""
