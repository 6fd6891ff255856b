"""Escape attempts against verifier.sandbox: every attack issue 13 found (and more), each asserting it failed.

Each attack is a small code string that would prove an escape if it succeeded: it reaches for something the
test plants outside the sandbox (a secret file, a listener on 127.0.0.1, a host process, the environment) and
the test checks the host side afterwards, not only what the code printed. Every attack starts with TAMPER,
which disabled the old audit-hook sandbox (its allow-lists lived in ``sys.modules['__main__']``); against
bubblewrap it changes nothing, which is the point.
"""

from __future__ import annotations

import ast
import os
import platform
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from verifier.sandbox import run_python

TAMPER = """\
import sys
_main = sys.modules["__main__"]
_main.BANNED, _main.BANNED_MODULES, _main.PATH_EVENTS = ("\\0",), set(), set()
_main._inside = lambda path, write: True
"""


def attack(code: str, **limits: object):
    return run_python(TAMPER + textwrap.dedent(code), **limits)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file outside the sandbox holding a token no code inside should ever print."""
    path = tmp_path / "secret.txt"
    path.write_text(f"secret-{uuid.uuid4().hex}")
    return path


class Listener:
    """A TCP listener on the host's 127.0.0.1 that records every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def host_sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A host process the sandboxed code must not be able to signal or trace."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_reading_etc_passwd_gives_nothing() -> None:
    result = attack("""
        for path in ("/etc/passwd", "/etc/shadow", "/proc/1/root/etc/passwd", "/proc/self/root/etc/passwd"):
            try:
                print(open(path).read())
            except OSError as e:
                print(path, type(e).__name__)
    """)
    assert "root:x:0:0" not in result.stdout and "root:" not in result.stdout
    assert result.stdout.count("Error") == 4


def test_id_cannot_run_and_the_code_is_not_root() -> None:
    result = attack("""
        import os, subprocess
        print("uid", os.getuid(), os.geteuid(), os.getgid(), os.getgroups())
        for run in (lambda: os.popen("id").read(), lambda: subprocess.run(["id"], capture_output=True).stdout,
                    lambda: subprocess.run("id", shell=True, capture_output=True).stdout,
                    lambda: os.execv("/usr/bin/id", ["id"])):
            try:
                print(run())
            except OSError as e:
                print(type(e).__name__)
        status = dict(line.split(":", 1) for line in open("/proc/self/status"))
        print("caps", status["CapEff"].strip(), status["CapPrm"].strip(), "nnp", status["NoNewPrivs"].strip())
    """)
    assert "uid=" not in result.stdout and "root" not in result.stdout
    uid_line = next(line for line in result.stdout.splitlines() if line.startswith("uid "))
    assert uid_line.split()[1:3] != ["0", "0"] and "0" not in uid_line.split()[1:4]
    assert "caps 0000000000000000 0000000000000000 nnp 1" in result.stdout


def test_the_environment_is_empty_and_no_process_environ_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    monkeypatch.setenv("RAY_TRACEMILL_TOKEN", canary)  # what run_python itself would pass on if it leaked
    result = attack("""
        import os
        print(sorted(os.environ))
        for pid in [os.getppid(), 1] + [p for p in os.listdir("/proc") if p.isdigit()]:
            try:
                print(open(f"/proc/{pid}/environ", "rb").read())
            except OSError as e:
                print(pid, type(e).__name__)
    """)
    assert result.verdict == "ok"
    assert canary not in result.stdout
    # the test process's own (exec-time) environment, as /proc/PPID/environ showed it to the old sandbox
    assert f"PATH={os.environ['PATH']}" not in result.stdout and "RAY_" not in result.stdout
    allowed = {"OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LC_CTYPE", "PWD"}
    assert set(ast.literal_eval(result.stdout.splitlines()[0])) <= allowed


def test_network_and_setns_into_the_host_network_reach_no_listener(listener: Listener) -> None:
    result = attack(f"""
        import ctypes, os, socket
        libc = ctypes.CDLL(None, use_errno=True)
        def connect(how):
            try:
                socket.create_connection(("127.0.0.1", {listener.port}), timeout=1).close()
                print("connected", how)
            except OSError as e:
                print(how, type(e).__name__)
        connect("direct")
        for pid in ["1", str(os.getppid()), "self"] + [p for p in os.listdir("/proc") if p.isdigit()]:
            try:
                fd = os.open(f"/proc/{{pid}}/ns/net", os.O_RDONLY)
            except OSError as e:
                print(pid, type(e).__name__)
                continue
            if libc.setns(fd, 0x40000000) == 0:  # CLONE_NEWNET
                connect("setns " + pid)
            else:
                print("setns", pid, os.strerror(ctypes.get_errno()))
    """)
    assert result.verdict == "ok" and "direct ConnectionRefusedError" in result.stdout  # the attack ran
    assert "connected" not in result.stdout
    assert listener.accepted == 0


def test_a_host_abstract_unix_socket_is_unreachable() -> None:
    name = f"\0tracemill-test-{uuid.uuid4().hex}"
    server = socket.socket(socket.AF_UNIX)
    server.bind(name)
    server.listen()
    server.settimeout(0.5)
    try:
        result = attack(f"""
            import socket
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect({name!r})
                print("connected")
            except OSError as e:
                print(type(e).__name__)
        """)
        assert result.verdict == "ok" and "connected" not in result.stdout
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()


@pytest.mark.parametrize("ending", ["exits", "is killed at the wall clock"])
def test_setsid_children_do_not_survive_the_run(ending: str) -> None:
    # A marker only the sandboxed processes carry in their command line: the bootstrap's memory argument.
    memory_mb = 347 if ending == "exits" else 349
    marker = f"\0{memory_mb * 2**20}\0".encode()
    hang = ending != "exits"
    result = attack(f"""
        import os, time
        started = 0
        for _ in range(60):
            try:
                pid = os.fork()
            except OSError:
                break
            if pid == 0:
                os.setsid()
                if os.fork() == 0:
                    time.sleep(30)
                os._exit(0)
            os.waitpid(pid, 0)
            started += 1
        print("started", started, flush=True)
        if {hang}:
            time.sleep(60)
    """, memory_mb=memory_mb, timeout_s=10)
    assert result.verdict == ("timeout" if hang else "ok")
    assert "started" in result.stdout and int(result.stdout.split()[1]) > 0  # the attack itself ran
    survivors = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline + b"\0" and state != "Z":
            survivors.append(pid)
    assert survivors == []


def _host_file_attacks(secret: Path, outside: Path) -> str:
    return f"""
        import os
        secret, outside = {str(secret)!r}, {str(outside)!r}
        def attempt(name, fn):
            try:
                print(name, fn())
            except OSError as e:
                print(name, type(e).__name__)
        attempt("link", lambda: (os.link(secret, "hard"), open("hard").read()))
        attempt("symlink", lambda: (os.symlink(secret, "soft"), open("soft").read()))
        attempt("symlink-write", lambda: (os.symlink(outside + "/planted-1", "out"), open("out", "w").write("x")))
        attempt("rename-out", lambda: (open("mine", "w").write("x"), os.rename("mine", outside + "/planted-2")))
        attempt("link-out", lambda: (open("mine2", "w").write("x"), os.link("mine2", outside + "/planted-3")))
        def dir_fd():
            os.symlink(os.path.dirname(secret), "dir")
            fd = os.open("dir", os.O_RDONLY)
            got = os.read(os.open(os.path.basename(secret), os.O_RDONLY, dir_fd=fd), 1000)
            os.write(os.open("planted-4", os.O_WRONLY | os.O_CREAT, dir_fd=fd), b"x")
            return got
        attempt("dir_fd", dir_fd)
        def fchdir():
            os.fchdir(os.open(os.path.dirname(secret), os.O_RDONLY))
            return open(os.path.basename(secret)).read()
        attempt("fchdir", fchdir)
        attempt("proc-root", lambda: open("/proc/1/root" + secret).read())
        attempt("proc-cwd", lambda: os.listdir(f"/proc/{{os.getppid()}}/cwd"))
        attempt("rename", lambda: (os.rename(secret, "stolen"), open("stolen").read()))  # last: it moves the secret
    """


def test_rename_link_symlink_dir_fd_and_fchdir_reach_no_host_file(secret: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    token = secret.read_text()
    result = attack(_host_file_attacks(secret, outside))
    assert result.verdict == "ok" and token not in result.stdout
    assert secret.read_text() == token  # not moved away either
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside", "secret.txt"]
    assert list(outside.iterdir()) == []
    assert result.stdout.count("Error") == 10


def test_the_project_and_root_home_are_not_readable() -> None:
    source = Path(__file__).resolve().parents[1] / "verifier" / "sandbox.py"
    result = attack(f"""
        import os
        for i, path in enumerate(({str(source)!r}, {str(source.parents[1])!r}, "/work", "/root/.cache")):
            try:
                print(open(path).read() if path.endswith(".py") else os.listdir(path))
            except OSError as e:
                print(i, type(e).__name__)
        print(os.listdir("/root") if os.path.isdir("/root") else [])
    """)
    assert "bubblewrap" not in result.stdout
    assert [line.split()[-1] for line in result.stdout.splitlines()[:4]] == ["FileNotFoundError"] * 4
    # all /root holds is the path down to the interpreter when it lives there (pyenv), nothing of the host's
    assert ast.literal_eval(result.stdout.splitlines()[4]) in ([], [".pyenv"])


def test_pidfd_kill_and_ptrace_cannot_touch_a_host_process(host_sleeper: subprocess.Popen[bytes]) -> None:
    pid = host_sleeper.pid
    result = attack(f"""
        import ctypes, os, signal
        libc = ctypes.CDLL(None, use_errno=True)
        print("ptrace", libc.ptrace(0x4206, {pid}, 0, 0), os.strerror(ctypes.get_errno()))  # PTRACE_SEIZE
        try:
            signal.pidfd_send_signal(os.pidfd_open({pid}), signal.SIGKILL)
            print("pidfd sent")
        except OSError as e:
            print("pidfd", type(e).__name__)
        for sig_target in ({pid}, -{pid}):
            try:
                os.kill(sig_target, signal.SIGKILL)
                print("kill sent")
            except OSError as e:
                print("kill", type(e).__name__)
    """)
    assert host_sleeper.poll() is None  # still alive
    assert result.verdict == "ok" and "sent" not in result.stdout
    assert result.stdout.startswith("ptrace -1 ")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the seccomp filter is built for x86-64 syscalls")
def test_nested_namespaces_and_kernel_interfaces_are_refused_by_seccomp() -> None:
    # each call is harmless with these arguments; without the filter each fails with another errno (or works)
    calls = {"unshare NEWUSER": (272, 0x10000000), "unshare NEWNET": (272, 0x40000000), "setns": (308, -1, 0),
             "keyctl": (250, 0), "bpf": (321, 0, 0, 0), "userfaultfd": (323, 0), "io_uring_setup": (425, 0, 0),
             "perf_event_open": (298, 0, 0, -1, -1, 0), "clone3": (435, 0, 0)}
    result = attack(f"""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        for name, args in {calls!r}.items():
            print(name, libc.syscall(*[ctypes.c_long(a) for a in args]), os.strerror(ctypes.get_errno()))
        print("seccomp", open("/proc/self/status").read().split("Seccomp:")[1].split()[0])
    """)
    lines = result.stdout.splitlines()
    assert lines[:-1] == [f"{name} -1 Operation not permitted" for name in calls if name != "clone3"] \
        + ["clone3 -1 Function not implemented"]
    assert lines[-1] == "seccomp 2"  # SECCOMP_MODE_FILTER


def test_writing_180_mb_is_capped(tmp_path: Path) -> None:
    # 12 files of 15 MB: each under the per-file limit (16 MB); the total is what must be refused
    result = attack("""
        total = 0
        for i in range(12):
            try:
                with open(f"f{i}", "wb") as f:
                    for _ in range(15):
                        f.write(b"x" * 2**20)
                        f.flush()
                        total += 2**20
            except OSError as e:
                print(type(e).__name__)
                break
        print(total)
    """, timeout_s=60)
    written = int(result.stdout.split()[-1])
    assert written < 100 * 2**20
    assert "OSError" in result.stdout


def test_fork_bomb_is_capped() -> None:
    result = attack("""
        import os, time
        children = 0
        for _ in range(200):
            try:
                if os.fork() == 0:
                    time.sleep(3)
                    os._exit(0)
                children += 1
            except OSError:
                break
        print(children)
    """, timeout_s=10)
    assert int(result.stdout) < 32


def test_memory_bomb_is_a_memory_verdict() -> None:
    result = attack("chunks = []\nwhile True:\n    chunks.append(bytearray(10**7))", timeout_s=30)
    assert result.verdict == "memory_limit"


def test_infinite_loop_is_a_timeout() -> None:
    result = attack("while True:\n    pass", cpu_s=1, timeout_s=30)
    assert (result.verdict, result.returncode) == ("timeout", -signal.SIGXCPU)


def test_ignoring_sigxcpu_still_ends_in_timeout() -> None:
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass"
    result = attack(code, cpu_s=1, timeout_s=30)
    assert (result.verdict, result.returncode) == ("timeout", -signal.SIGKILL)


def test_dev_has_no_host_devices() -> None:
    result = attack("""
        import os
        print(sorted(os.listdir("/dev")))
        for dev in ("/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/mem", "/dev/kmsg", "/dev/port", "/proc/kcore"):
            try:
                print(dev, len(open(dev, "rb").read(512)))
            except OSError as e:
                print(dev, type(e).__name__)
    """)
    assert result.stdout.count("Error") == 7
    assert set(ast.literal_eval(result.stdout.splitlines()[0])) <= {
        "core", "fd", "full", "null", "ptmx", "pts", "random", "shm", "stderr", "stdin", "stdout", "tty", "urandom",
        "zero"}


def test_the_interpreter_cannot_be_written_even_from_a_nested_namespace() -> None:
    stdlib = Path(os.__file__).resolve().parent
    prefix = Path(sys.base_prefix).resolve()  # the read-only bind's mount point
    planted = stdlib / f"tracemill_planted_{uuid.uuid4().hex}.py"
    try:
        result = attack(f"""
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            def write(how):
                try:
                    open({str(planted)!r}, "w").write("x")
                    print("wrote", how)
                except OSError as e:
                    print(how, type(e).__name__)
                try:
                    open(os.__file__, "a").write("")
                    print("wrote os.py", how)
                except OSError as e:
                    print(how, type(e).__name__)
            write("plain")
            remount = lambda: libc.mount(None, {str(prefix)!r}.encode(), None, 32 | 4096, None)  # REMOUNT|BIND
            print("remount", remount(), os.strerror(ctypes.get_errno()))
            if libc.unshare(0x10000000 | 0x00020000) == 0:  # CLONE_NEWUSER | CLONE_NEWNS
                print("remount in userns", remount(), os.strerror(ctypes.get_errno()))
                write("userns")
        """)
        assert result.verdict == "ok" and "wrote" not in result.stdout
        assert not planted.exists()
    finally:
        planted.unlink(missing_ok=True)


def test_site_packages_do_not_bring_the_project() -> None:
    result = run_python("import sympy\nprint(sympy.Integer(2) ** 10)\nimport verifier", allow_site_packages=True,
                        timeout_s=60)  # importing sympy takes seconds on a loaded machine
    assert result.stdout == "1024\n"
    assert result.verdict == "error" and "No module named 'verifier'" in result.stderr


def test_nothing_but_the_interpreter_is_mounted() -> None:
    result = attack("import os\nprint(sorted(os.listdir('/')))")
    interpreter_root = Path(sys.base_prefix).resolve().parts[1]  # "root" for pyenv, "usr" for a system python
    allowed = {"dev", "lib", "lib32", "lib64", "proc", "sandbox", "tmp", "usr", interpreter_root}
    assert set(ast.literal_eval(result.stdout)) <= allowed


SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(os.geteuid() != 0 or not os.access(SYSTEM_PYTHON, os.X_OK),
                    reason="needs root to start a caller as nobody, and a system python nobody can run")
def test_a_normal_user_gets_the_same_sandbox() -> None:
    # Not root, bwrap makes a user namespace itself; the system python also takes the /usr-prefix branch.
    repo = Path(__file__).resolve().parents[1]
    driver = f"""
import sys
sys.path.insert(0, {str(repo)!r})
from verifier.sandbox import run_python
code = '''
import ctypes, os
print(os.getuid(), os.path.exists("/etc/passwd"), ctypes.CDLL(None).unshare(0x10000000))
n = 0
try:
    for _ in range(20):
        if os.fork() == 0:
            import time; time.sleep(2); os._exit(0)
        n += 1
except OSError:
    pass
print(n)
'''
result = run_python(code, max_processes=4, timeout_s=30)
print(result.verdict, result.stdout.split())
"""
    proc = subprocess.run([SYSTEM_PYTHON, "-I", "-c", driver], user=65534, group=65534, extra_groups=[],
                          capture_output=True, text=True, cwd="/", timeout=120)
    assert proc.stdout.split("\n")[0] == "ok ['65534', 'False', '-1', '3']", proc.stderr[-2000:]
