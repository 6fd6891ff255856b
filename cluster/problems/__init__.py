"""Problems, the first stage: every problem a run searches, and the ground truth where it is known.

- ``problem.py``: the ``Problem`` record and its stable id;
- ``arith.py``: the built-in generator of arith word problems, its grammar and the exact first wrong step;
- ``loaders.py``: GSM8K / MATH / ProcessBench / open-prompt rows from JSONL, JSON or Parquet, bad rows as
  rejects;
- ``given.py``: rows that bring their own solution steps and human label (ProcessBench);
- ``perturb.py``: variants with other names and numbers (memorization probes);
- ``few_shot.py``: worked examples per problem family;
- ``steps.py``: the one step splitter.

Why inside ``cluster/``: the ``sim`` engine reads an arith question back out of its prompt and writes steps in
the arith grammar, so problems must sit at the bottom of the import graph, below the engines as well as the
search. This package imports nothing of tracemill but ``storage.rejects``; the verifier's gold-answer check is
passed in by the caller (``pipelines.inputs``).
"""
