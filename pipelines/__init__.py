"""User-facing jobs and the ``tracemill`` CLI: run, label, mine, export, eval, report, submit."""
