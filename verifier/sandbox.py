"""Run untrusted model-written Python (rStar-style code steps) under OS isolation with bubblewrap.

The boundary is the kernel, not Python: an earlier design checked the code with an audit hook, which the code
itself could rewrite (18 of 20 bypasses worked). Each run gets, from ``bwrap``:
- a fresh mount namespace holding only a read-only interpreter (``sys.base_prefix`` and the system library
  dirs it links against; no ``/usr/bin``, no ``/etc``, no project, nothing else of ``/root``), its own
  ``/proc`` and a minimal ``/dev``; the only writable place is ``/tmp``, a tmpfs of ``disk_mb`` (all bytes
  written together);
- its own network (loopback only: nothing on the host's 127.0.0.1 is reachable), PID (the run's processes,
  ``setsid`` ones included, die with it), IPC, UTS and cgroup namespaces; ``--die-with-parent``;
- an environment with nothing but thread-count caps, and (on x86-64) a seccomp filter, below.

Inside, a short trusted bootstrap sets the rlimits (CPU, address space, file size, open files, processes, no
core files), then gives up root for good: run as root, it switches to a uid of its own, losing every
capability (bwrap's ``no_new_privs`` keeps an exec from regaining any), so that RLIMIT_NPROC counts only this
run's processes: the kernel never applies that limit to host uid 0, even when a user namespace shows it as
``nobody``. Run as a normal user, bwrap makes a user namespace (``--unshare-user --disable-userns``) and the
bootstrap keeps that uid.

Verdicts are decided from how the process ended, never from measured CPU time (which under load lags the
kernel's own accounting): SIGXCPU, or SIGKILL from the CPU hard limit, is ``"timeout"``, as is the wall clock.
Without bwrap nothing runs: the verdict is ``"error"`` with ``"sandbox unavailable: install bubblewrap"``.

>>> run_python("print(sum(range(10)))").stdout
'45\\n'
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import platform
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import time
from dataclasses import dataclass

MEMORY_EXIT = 87  # exit status of the bootstrap on MemoryError
READ_CHUNK = 65536  # bytes per pipe read
THREAD_CAPS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
VERDICTS = ("ok", "error", "timeout", "memory_limit", "output_limit")
UNAVAILABLE = "sandbox unavailable: install bubblewrap (apt-get install bubblewrap, or bash .ci/install_sandbox.sh)"
CODE_PATH = "/sandbox/main.py"  # where the code file appears inside, read-only (tracebacks quote its lines)
WORKDIR = "/tmp"  # the writable tmpfs and the code's cwd
SYSTEM_LIB_DIRS = ("/lib", "/lib32", "/lib64", "/usr/lib", "/usr/lib32", "/usr/lib64")  # libc, libm, libffi, ...
# A seccomp filter (x86-64 only; elsewhere the namespaces and the dropped uid stand alone) refuses with EPERM the
# syscalls that reach past the namespaces or widen the kernel's attack surface, even from a nested user
# namespace (itself refused: clone/unshare with any CLONE_NEW* flag); clone3 gets ENOSYS, as container runtimes
# do, since its flags cannot be inspected, and libc then falls back to clone. Numbers from asm/unistd_64.h.
SECCOMP_DENY_X86_64 = {
    "ptrace": 101, "syslog": 103, "pivot_root": 155, "chroot": 161, "acct": 163, "mount": 165, "umount2": 166,
    "swapon": 167, "swapoff": 168, "reboot": 169, "init_module": 175, "delete_module": 176, "quotactl": 179,
    "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "perf_event_open": 298,
    "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429,
    "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}
NR_CLONE, NR_UNSHARE, NR_CLONE3 = 56, 272, 435
CLONE_NEW_ANY = 0x7E020000  # CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NEWTIME = 0x80  # unshare only: in clone's flags these low bits are the exit signal
# Run as root, each run switches to its own uid from this range, so no two runs share an RLIMIT_NPROC count.
UID_BASE = 1 << 24  # above any uid an ordinary system hands out (65534 is nobody)
_run_ids = itertools.count()

# The bootstrap, run by the sandboxed interpreter: argv is (code path, cpu s, memory bytes, file bytes,
# processes, uid), uid -1 meaning "keep the current one". It reads the code, limits itself, drops root, then runs the code.
_BOOTSTRAP = r'''
import os, resource, signal, sys
code_path = sys.argv[1]
cpu_s, mem_b, fsize_b, nproc, uid = map(int, sys.argv[2:7])
with open(code_path, encoding="utf-8", errors="replace") as f:
    source = f.read()
for limit, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_AS, mem_b), (resource.RLIMIT_FSIZE, fsize_b),
                     (resource.RLIMIT_NOFILE, 64), (resource.RLIMIT_NPROC, nproc)):
    resource.setrlimit(limit, (value, value))
resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it; a file over the limit ends the run instead
if uid >= 0:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
del resource, signal, cpu_s, mem_b, fsize_b, nproc, uid, f
sys.argv = [code_path]
glb = {"__name__": "__main__", "__builtins__": __builtins__}
try:
    exec(compile(source, code_path, "exec"), glb)
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


@functools.cache
def _interpreter() -> tuple[str, tuple[str, ...]]:
    """The real interpreter binary and the bwrap arguments that make it (and only it) visible, read-only."""
    exe = os.path.realpath(sys.executable)  # a venv's python is a symlink to the base interpreter
    args: list[str] = []
    for path in SYSTEM_LIB_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    prefix = os.path.realpath(sys.base_prefix)
    if prefix not in ("/", "/usr"):  # a system python's stdlib is under /usr/lib, already bound
        args += ["--ro-bind", prefix, prefix]
    if not exe.startswith(prefix + os.sep) or prefix in ("/", "/usr"):
        args += ["--ro-bind", exe, exe]
    return exe, tuple(args)


@functools.cache
def _seccomp_filter() -> bytes:
    """The classic-BPF program (``struct sock_filter[]``) bwrap loads from ``--seccomp``; empty off x86-64."""
    if platform.machine() != "x86_64":
        return b""
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
    nxt = 0  # a relative jump of 0: fall through to the next instruction
    prog: list[tuple[int, int | str, int | str, int]] = [
        (ld, 0, 0, 4), (jeq, nxt, "kill", 0xC000003E),  # seccomp_data.arch == AUDIT_ARCH_X86_64, else kill
        (ld, 0, 0, 0), (jge, "eperm", nxt, 0x40000000),  # seccomp_data.nr; the x32 ABI is refused whole
        (jeq, "enosys", nxt, NR_CLONE3),
    ]
    for nr, flags in ((NR_CLONE, CLONE_NEW_ANY), (NR_UNSHARE, CLONE_NEW_ANY | CLONE_NEWTIME)):
        prog += [(jeq, nxt, 2, nr), (ld, 0, 0, 16), (jset, "eperm", "allow", flags)]  # args[0], low 32 bits
    prog += [(jeq, "eperm", nxt, nr) for nr in SECCOMP_DENY_X86_64.values()]
    returns = {"allow": 0x7FFF0000, "eperm": 0x00050000 | errno.EPERM, "enosys": 0x00050000 | errno.ENOSYS,
               "kill": 0x80000000}  # SECCOMP_RET_ALLOW, _ERRNO | errno, _KILL_PROCESS
    at = {label: len(prog) + i for i, label in enumerate(returns)}
    prog += [(ret, 0, 0, value) for value in returns.values()]

    def offset(i: int, target: int | str) -> int:
        return at[target] - i - 1 if isinstance(target, str) else target

    return b"".join(struct.pack("HBBI", code, offset(i, jt), offset(i, jf), k) for i, (code, jt, jf, k) in enumerate(prog))


def _parent_dirs(binds: list[str]) -> list[str]:
    """``--dir`` arguments making every mount point's parents traversable: bwrap creates them mode 0700,
    which the unprivileged code could not pass through. ``WORKDIR`` (already mounted, mode 1777) is left as is."""
    dests = [binds[i + 2] for i, arg in enumerate(binds) if arg in ("--ro-bind", "--symlink")]
    parents = {os.path.dirname(d) for d in dests}
    ancestors: set[str] = set()
    for parent in parents:
        while parent not in ("/", "", WORKDIR):
            ancestors.add(parent)
            parent = os.path.dirname(parent)
    return [a for path in sorted(ancestors, key=len) for a in ("--perms", "0755", "--dir", path)]


def _site_packages() -> list[str]:
    """Installed-package dirs on the parent's path (for ``allow_site_packages``). The project's own packages
    stay out even where its ``.venv`` sits inside the checkout: an editable install reaches them only through
    a finder that points at the (unmounted) source, and no ``.pth`` file runs (``-S``, plain path entries)."""
    dirs = []
    for path in sys.path:
        real = os.path.realpath(path) if path else ""
        if os.path.basename(real) in ("site-packages", "dist-packages") and os.path.isdir(real) and real not in dirs:
            dirs.append(real)
    return dirs


def _argv(bwrap: str, cpu_s: int, memory_mb: int, file_size_mb: int, disk_mb: int, max_processes: int,
          allow_site_packages: bool, code_fd: int, seccomp_fd: int | None) -> list[str]:
    exe, interpreter_binds = _interpreter()
    binds = list(interpreter_binds)
    flags = ["-I", "-S"]
    bootstrap = _BOOTSTRAP
    if allow_site_packages:
        dirs = _site_packages()
        for path in dirs:
            binds += ["--ro-bind", path, path]
        bootstrap = f"import sys\nsys.path += {dirs!r}\n" + bootstrap  # plain dirs: no .pth code runs
    if os.geteuid() == 0:  # bwrap keeps root inside; the bootstrap needs setuid/setgid once, then drops all
        uid = UID_BASE + (os.getpid() << 8) % (1 << 30) + next(_run_ids) % 256
        nproc = max_processes
        privilege = ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:  # an unprivileged user: bwrap needs a user namespace, and no nested ones are allowed
        uid = -1
        nproc = max_processes + 1  # bwrap's own init (PID 1 inside) runs as the same uid and counts too
        privilege = ["--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"]
    return [bwrap, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
            *privilege, "--die-with-parent", "--new-session", "--clearenv",
            *itertools.chain.from_iterable(("--setenv", k, v) for k, v in THREAD_CAPS.items()),
            # the tmpfs first: an interpreter or venv that lives under /tmp (a checkout in /tmp) is bound over it,
            # not hidden by it
            "--perms", "1777", "--size", str(disk_mb * 2**20), "--tmpfs", WORKDIR,
            *_parent_dirs(binds), *binds, "--proc", "/proc", "--dev", "/dev", "--chdir", WORKDIR,
            "--perms", "0444", "--ro-bind-data", str(code_fd), CODE_PATH, "--remount-ro", "/",
            *(["--seccomp", str(seccomp_fd)] if seccomp_fd is not None else []),
            exe, *flags, "-c", bootstrap, CODE_PATH, str(cpu_s), str(memory_mb * 2**20), str(file_size_mb * 2**20),
            str(nproc), str(uid)]


def _memfd(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding ``data``, positioned at its start, for bwrap to read."""
    fd = os.memfd_create(name)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


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


def _wait(proc: subprocess.Popen[bytes], deadline: float) -> str | None:
    """Wait for bwrap until ``deadline``, then kill it (its PID namespace, and so every process in it, dies too)."""
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        return None
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.wait()
        return "timeout"


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _returncode(status: int) -> int:
    """bwrap reports a child killed by signal N as exit status 128 + N; give it back as -N, like subprocess."""
    return -(status - 128) if 128 < status < 128 + signal.NSIG else status


def _classify(stopped: str | None, returncode: int) -> str:
    """Verdict from how the run ended; the parent's own reason to stop it wins."""
    if stopped is not None:
        return stopped
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL):  # CPU soft limit, then (if SIGXCPU is ignored) hard
        return "timeout"
    if returncode == MEMORY_EXIT:
        return "memory_limit"
    if returncode == -signal.SIGXFSZ:
        return "output_limit"
    return "ok" if returncode == 0 else "error"


def run_python(code: str, *, timeout_s: float = 5.0, cpu_s: float = 4.0, memory_mb: int = 512,
               max_output: int = 1_000_000, file_size_mb: int = 16, disk_mb: int = 64, max_processes: int = 8,
               allow_site_packages: bool = False) -> SandboxResult:
    """Run ``code`` in a fresh sandboxed interpreter; never raises for anything the code does.

    ``timeout_s`` is wall clock for the whole sandbox; ``cpu_s`` is CPU seconds per process (RLIMIT_CPU, whole
    seconds, at least 1); ``memory_mb`` caps each process's address space; ``max_output`` caps bytes read from
    each of stdout and stderr; ``file_size_mb`` caps one file and ``disk_mb`` all files written; at most
    ``max_processes`` processes and threads (so at most ``max_processes * memory_mb`` of memory);
    ``allow_site_packages`` makes installed packages (sympy, numpy) importable, read-only.
    """
    start = time.monotonic()
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return SandboxResult("error", "", UNAVAILABLE, None, 0.0)
    fds: list[int] = []  # what bwrap reads: the code, then the seccomp filter
    try:
        fds.append(_memfd("tracemill-sandbox-code", code.encode("utf-8", errors="surrogatepass")))
        if seccomp := _seccomp_filter():
            fds.append(_memfd("tracemill-sandbox-seccomp", seccomp))
        argv = _argv(bwrap, max(1, int(cpu_s)), memory_mb, file_size_mb, disk_mb, max_processes,
                     allow_site_packages, fds[0], fds[1] if seccomp else None)
        proc = subprocess.Popen(argv, env=dict(THREAD_CAPS), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, pass_fds=fds)
    except OSError as exc:  # could not even start (fd limits, a broken bwrap)
        return SandboxResult("error", "", f"sandbox failed to start: {exc}", None, time.monotonic() - start)
    finally:
        for fd in fds:
            os.close(fd)
    try:
        out, err, stopped = _read_capped(proc, start + timeout_s, max_output)
        if stopped is not None:
            _kill_group(proc)
        late = _wait(proc, start + timeout_s)
        stopped = stopped or late
    finally:
        if proc.returncode is None:  # an exception above: never leave a sandbox running
            _kill_group(proc)
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    if proc.returncode == 1 and not out and err.startswith(b"bwrap: "):  # bwrap's own setup failed: never ran
        return SandboxResult("error", "", "sandbox failed to start: " + err.decode(errors="replace"), None,
                             time.monotonic() - start)
    returncode = _returncode(proc.returncode)
    return SandboxResult(_classify(stopped, returncode), out.decode("utf-8", errors="replace"),
                         err.decode("utf-8", errors="replace"), returncode, time.monotonic() - start)
