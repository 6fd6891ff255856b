"""From labeled trees to training rows: mined traces, their filters, and the dataset formats.

- ``miners.py``: ``shortest_correct``, ``backtrack`` and ``journey`` traces from a labeled tree;
- ``reflection.py``: the reflection a backtrack trace writes after a wrong step (with the verifier's feedback);
- ``filters.py``: exact and near duplicates, decontamination against evaluation sets;
- ``formats.py``: PRM (stepwise), SFT (conversational, recovery, messages) and GRPO rows.

The jobs that read a run and store these rows are ``pipelines/mine.py`` and ``pipelines/export.py``.
"""
