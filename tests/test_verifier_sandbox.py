"""Sandboxed code execution: each limit produces its own verdict and the test process keeps running."""

from __future__ import annotations

import os

import pytest

from verifier.sandbox import VERDICTS, run_python


def test_normal_code_runs_with_stdlib_imports() -> None:
    result = run_python("import math, fractions\nprint(math.factorial(5), fractions.Fraction(1, 3) * 3)")
    assert (result.verdict, result.stdout, result.returncode) == ("ok", "120 1\n", 0)


def test_code_may_write_and_read_its_own_temp_dir() -> None:
    result = run_python("open('f.txt', 'w').write('hi')\nprint(open('f.txt').read())")
    assert (result.verdict, result.stdout) == ("ok", "hi\n")


def test_exception_is_error_with_traceback() -> None:
    result = run_python("raise ValueError('boom')")
    assert result.verdict == "error" and result.returncode == 1
    assert "ValueError: boom" in result.stderr


def test_busy_loop_hits_cpu_limit() -> None:
    result = run_python("while True:\n    pass", cpu_s=1, timeout_s=20)
    assert result.verdict == "cpu_limit"


def test_sleeping_code_hits_wall_timeout() -> None:
    result = run_python("import time\ntime.sleep(60)", timeout_s=1)
    assert result.verdict == "timeout" and result.duration_s < 10


def test_code_that_closes_its_pipes_still_times_out() -> None:
    result = run_python("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(60)", timeout_s=1)
    assert result.verdict == "timeout"


def test_fork_bomb_is_stopped_and_parent_is_fine() -> None:
    parent = os.getpid()
    result = run_python("import os\nwhile True:\n    os.fork()", timeout_s=5)
    assert result.verdict in ("forbidden", "error")
    assert os.getpid() == parent and run_python("print(1)").verdict == "ok"


def test_subprocess_is_forbidden() -> None:
    assert run_python("import subprocess\nsubprocess.run(['ls'])").verdict == "forbidden"


def test_huge_allocation_hits_memory_limit() -> None:
    assert run_python("x = bytearray(10**10)").verdict == "memory_limit"


@pytest.mark.parametrize("path", ["/etc/passwd", "../escape.txt"])
def test_files_outside_the_temp_dir_are_forbidden(path: str) -> None:
    result = run_python(f"try:\n    open({path!r}).read()\nexcept BaseException:\n    print('swallowed')")
    assert result.verdict == "forbidden"
    assert "swallowed" not in result.stdout  # the hook ends the process; except cannot catch it


def test_socket_is_forbidden() -> None:
    code = "import socket\ns = socket.socket()\ns.connect(('1.1.1.1', 80))"
    assert run_python(code).verdict == "forbidden"


def test_output_is_capped() -> None:
    result = run_python("import sys\nsys.stdout.write('x' * (100 * 2**20))", max_output=1_000_000)
    assert result.verdict == "output_limit"
    assert len(result.stdout) <= 1_000_001


def test_temp_dir_is_removed() -> None:
    result = run_python("import os\nprint(os.getcwd())")
    assert result.verdict == "ok" and not os.path.exists(result.stdout.strip())


def test_nonzero_exit_is_error_with_its_code() -> None:
    result = run_python("import sys\nsys.exit(3)")
    assert (result.verdict, result.returncode) == ("error", 3) and result.verdict in VERDICTS
