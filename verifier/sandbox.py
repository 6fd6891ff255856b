"""Run untrusted model-written Python (rStar-style code steps) in a limited child process.

Layers, each cheap and each catching what the others miss:
- a fresh interpreter (``python -I -S``: no user site, no env vars, no site-packages unless asked), an
  environment with nothing but thread-count caps, and a temp working dir removed afterwards;
- kernel limits set by the child on itself before the code runs: RLIMIT_CPU, RLIMIT_AS, RLIMIT_NPROC,
  RLIMIT_FSIZE, RLIMIT_NOFILE, no core files; plus a private network namespace via ``unshare`` where the
  kernel allows it (falls back silently otherwise);
- an audit hook (``sys.addaudithook``) that ends the child the moment code opens a socket, starts a process,
  forks, loads ctypes, signals another process, or opens a file outside the temp dir (reads of the Python
  installation are allowed so imports work). Ending the process (not raising) means ``except:`` in the
  code cannot swallow it;
- the parent enforces a wall-clock limit on the whole process group and caps what it reads from the pipes.

The limits are set inside the child rather than in ``preexec_fn`` because ``preexec_fn`` is unsafe in
threaded parents (Ray actors are threaded).

>>> run_python("print(sum(range(10)))").stdout
'45\\n'
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

FORBIDDEN_EXIT = 86  # exit status the audit hook uses; paired with FORBIDDEN_MARK on stderr
MEMORY_EXIT = 87  # exit status of the bootstrap on MemoryError
FORBIDDEN_MARK = "sandbox: forbidden"
READ_CHUNK = 65536  # bytes per pipe read
THREAD_CAPS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
VERDICTS = ("ok", "error", "timeout", "cpu_limit", "memory_limit", "output_limit", "forbidden")

# The child's bootstrap. It receives (code file, cpu s, memory bytes, file bytes, allow-network flag) in
# argv, limits itself, installs the audit hook, then executes the code as __main__.
_BOOTSTRAP = r'''
import os, resource, sys, sysconfig
code_path, cpu_s, mem_b, fsize_b, isolate_net = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
if isolate_net:
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(0x40000000) != 0:  # CLONE_NEWNET
            libc.unshare(0x10000000 | 0x40000000)  # CLONE_NEWUSER | CLONE_NEWNET (unprivileged)
        del ctypes, libc
    except Exception:
        pass
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
resource.setrlimit(resource.RLIMIT_AS, (mem_b, mem_b))
resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_b, fsize_b))
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
work = os.path.realpath(os.getcwd())
roots = {os.path.realpath(p) for p in sys.path if p}
roots |= {os.path.realpath(p) for k, p in sysconfig.get_paths().items() if k in ("stdlib", "platstdlib")}
roots = tuple(r + os.sep for r in roots)
BANNED = ("socket.", "subprocess.", "os.system", "os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
          "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.", "pty.", "os.startfile", "resource.setrlimit",
          "resource.prlimit", "sys.remote_exec", "os.chroot", "os.putenv", "os.unsetenv")
BANNED_MODULES = {"ctypes", "_ctypes", "_posixsubprocess", "socket", "_socket", "pty", "multiprocessing"}
PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.listdir", "os.scandir", "os.chmod",
               "os.chown", "os.link", "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "os.chdir"}
def _deny(event, detail):
    os.write(2, ("\n%s %s %s\n" % ("sandbox: forbidden", event, detail)).encode(errors="replace")[:500])
    os._exit(86)
def _inside(path, write):
    if isinstance(path, int):
        return True
    try:
        full = os.path.realpath(os.path.join(work, os.fsdecode(path)))
    except Exception:
        return False
    if full == work or full.startswith(work + os.sep):
        return True
    return not write and (full + os.sep).startswith(roots)
def _hook(event, args):
    if event.startswith(BANNED):
        _deny(event, "")
    elif event == "import" and args[0].split(".")[0] in BANNED_MODULES:
        _deny(event, args[0])
    elif event == "open":
        path, mode, flags = args
        write = (mode is not None and any(c in mode for c in "wax+")) or bool((flags or 0) & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND))
        if path is not None and not _inside(path, write):
            _deny(event, path)
    elif event in PATH_EVENTS and args and not _inside(args[0], event not in ("os.listdir", "os.scandir")):
        _deny(event, args[0])
with open(code_path, encoding="utf-8", errors="replace") as f:
    source = f.read()
del sysconfig, resource
sys.addaudithook(_hook)
sys.argv = ["main.py"]
glb = {"__name__": "__main__", "__builtins__": __builtins__}
try:
    exec(compile(source, "main.py", "exec"), glb)
except MemoryError:
    os.write(2, b"\nMemoryError\n")
    os._exit(87)
'''


@dataclass(frozen=True)
class SandboxResult:
    verdict: str  # one of VERDICTS
    stdout: str
    stderr: str
    returncode: int | None  # negative: killed by that signal; None if it never started
    duration_s: float


def _read_capped(proc: subprocess.Popen[bytes], deadline: float, max_output: int) -> tuple[bytes, bytes, str | None]:
    """Read both pipes until EOF, the deadline, or more than ``max_output`` bytes; returns why it stopped early."""
    buffers = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    with selectors.DefaultSelector() as sel:
        for pipe in buffers:
            sel.register(pipe, selectors.EVENT_READ)
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), "timeout"
            for key, _ in sel.select(timeout=remaining):
                chunk = os.read(key.fd, READ_CHUNK)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = buffers[key.fileobj]
                buf += chunk[: max_output + 1 - len(buf)]
                if len(buf) > max_output:
                    return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), "output_limit"
    return bytes(buffers[proc.stdout]), bytes(buffers[proc.stderr]), None


def _reap(proc: subprocess.Popen[bytes], deadline: float) -> tuple[int, os.struct_rusage, str | None]:
    """Wait for the child (it may close its pipes and keep running) until ``deadline``, then kill it.

    Uses ``os.wait4`` rather than ``Popen.wait`` to get the child's CPU time (to tell cpu_limit apart).
    """
    late = None
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage, late
        if time.monotonic() >= deadline and late is None:
            late = "timeout"
            _kill_group(proc)
        time.sleep(0.005)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _classify(stopped: str | None, returncode: int, cpu_used_s: float, cpu_s: float, stderr: str) -> str:
    """Verdict from how the child ended; the parent's own reason to stop it wins."""
    if stopped is not None:
        return stopped
    if returncode == FORBIDDEN_EXIT and FORBIDDEN_MARK in stderr:
        return "forbidden"
    if returncode == MEMORY_EXIT:
        return "memory_limit"
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL) and cpu_used_s >= cpu_s - 0.05:
        return "cpu_limit"
    if returncode == -signal.SIGXFSZ:
        return "output_limit"
    return "ok" if returncode == 0 else "error"


def run_python(code: str, *, timeout_s: float = 5.0, cpu_s: float = 4.0, memory_mb: int = 512,
               max_output: int = 1_000_000, file_size_mb: int = 16, isolate_network: bool = True,
               allow_site_packages: bool = False) -> SandboxResult:
    """Run ``code`` in a fresh limited interpreter; never raises for anything the code does.

    ``timeout_s`` is wall clock for the whole process group; ``cpu_s`` is CPU seconds (RLIMIT_CPU, whole
    seconds, at least 1); ``memory_mb`` caps the address space; ``max_output`` caps bytes read from each of
    stdout and stderr; ``allow_site_packages`` makes installed packages (sympy, numpy) importable.
    """
    workdir = tempfile.mkdtemp(prefix="tracemill-sandbox-")
    start = time.monotonic()
    try:
        code_path = os.path.join(workdir, "main.py")
        with open(code_path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(code)
        flags = ["-I"] + ([] if allow_site_packages else ["-S"])
        argv = [sys.executable, *flags, "-c", _BOOTSTRAP, code_path, str(max(1, int(cpu_s))),
                str(memory_mb * 2**20), str(file_size_mb * 2**20), "1" if isolate_network else "0"]
        proc = subprocess.Popen(argv, cwd=workdir, env=dict(THREAD_CAPS), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                close_fds=True)
        try:
            out, err, stopped = _read_capped(proc, start + timeout_s, max_output)
            if stopped is not None:
                _kill_group(proc)
            status, usage, late = _reap(proc, start + timeout_s)
            stopped = stopped or late
        finally:
            _kill_group(proc)  # on any exit path, and grandchildren that outlived the child
            if proc.returncode is None:
                status, usage, _ = _reap(proc, time.monotonic())
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
        stderr = err.decode("utf-8", errors="replace")
        verdict = _classify(stopped, status, usage.ru_utime + usage.ru_stime, max(1, int(cpu_s)), stderr)
        return SandboxResult(verdict, out.decode("utf-8", errors="replace"), stderr, proc.returncode,
                             time.monotonic() - start)
    except OSError as exc:  # could not even start (fd limits, missing interpreter)
        return SandboxResult("error", "", f"sandbox failed to start: {exc}", None, time.monotonic() - start)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
