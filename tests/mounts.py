"""Real filesystem faults for tests: a size-limited tmpfs (a disk that fills up) and a read-only bind mount.

Both need root (``mount``); where mounting is impossible the tests using them are skipped with the reason.
Every mount is undone when its ``with`` block ends, even when the test fails.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

BALLAST_CHUNK = 64 * 1024


def _mount(*args: str) -> None:
    out = subprocess.run(["mount", *args], capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount here ({out.stderr.strip() or out.returncode}); needs root")


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=True)  # busy (an open file): detach it lazily


@contextmanager
def small_disk(path: Path, size: str = "16m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path``: writes beyond it fail with ENOSPC, as on a full disk."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        _umount(path)


@contextmanager
def read_only_view(source: Path, path: Path) -> Iterator[Path]:
    """``source`` seen read-only at ``path`` (a bind mount remounted ``ro``: EROFS even for root)."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    path.mkdir(parents=True, exist_ok=True)
    _mount("--bind", str(source), str(path))
    try:
        _mount("-o", "remount,bind,ro", str(path))
        yield path
    finally:
        _umount(path)


def fill(disk: Path, name: str = "ballast") -> Path:
    """Write a file on ``disk`` until the filesystem is full; delete it to free the space again."""
    ballast = disk / name
    chunk = os.urandom(BALLAST_CHUNK)
    with open(ballast, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
        try:  # the last partial chunk
            while True:
                f.write(b"x" * 512)
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
    return ballast


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to assert nothing changed)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
