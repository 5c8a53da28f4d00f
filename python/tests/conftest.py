"""Shared fixtures of the gpukit package's tests.

ctest runs them with the build tree's library (GPUKIT_LIBRARY), the tool (GPUKIT) and the C
loader's batch dumper (GK_LOADER_DUMP). Run by hand:
    GPUKIT_LIBRARY=build/dev/libgpukit.so.1 GPUKIT=build/dev/gpukit \\
    GK_LOADER_DUMP=build/dev/tests/gk_loader_dump /usr/bin/python3 -m pytest python/tests
A missing library fails every test with the reason (importing gpukit raises it).
"""
import os
import socket
import subprocess

import numpy as np
import pytest

import gpukit  # noqa: F401  (fails the whole run, with the reason, when the library is missing)
from gpukit._lib import lib as _lib

SOURCE = os.environ.get("GK_SOURCE_DIR") or os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def need_env(name):
    """The value of an environment variable the test needs; fails (never skips) without it."""
    value = os.environ.get(name)
    if not value:
        pytest.fail("%s is not set: run the Python tests through ctest (make test), or set it "
                    "as python/tests/conftest.py explains" % name)
    return value


@pytest.fixture
def tool():
    """The gpukit command-line tool of the same build."""
    return need_env("GPUKIT")


@pytest.fixture
def dump():
    """Runs the C loader (tests/support/loader_dump.c) and returns (bytes, index lines)."""
    exe = need_env("GK_LOADER_DUMP")

    def run(kind, source, out, **settings):
        args = [exe, kind, str(source), str(out)] + ["%s=%s" % kv for kv in settings.items()]
        r = subprocess.run(args, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        with open(out, "rb") as f:
            data = f.read()
        with open(str(out) + ".idx") as f:
            lines = [tuple(int(x) for x in line.split()) for line in f]
        return data, lines

    return run


def write_shard(path, tokens, version=1):
    """Writes an llm.c token shard (uint16 tokens for version 1, uint32 for version 2)."""
    header = np.zeros(256, dtype="<i4")
    header[0], header[1], header[2] = 20240520, version, len(tokens)
    dt = "<u2" if version == 1 else "<u4"
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype=dt).tobytes())


@pytest.fixture
def records(tmp_path):
    """A record file of 1000 records of shape (3, 5) float32 whose values encode their index."""
    arr = (np.arange(1000 * 15, dtype=np.float32) * 0.5).reshape(1000, 3, 5)
    path = tmp_path / "r.gkr"
    gpukit.data.pack(arr, path)
    return path, arr


@pytest.fixture
def statsd(tmp_path, monkeypatch):
    """A Unix datagram socket standing in for `gpukit run`: GK_METRICS_SOCKET names it and
    gpukit.metrics (and the library's publisher) ask the environment again. Yields a function
    returning the lines received."""
    path = str(tmp_path / "m.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    monkeypatch.setenv("GK_METRICS_SOCKET", path)
    gpukit.metrics._reset_for_tests()

    def received(library=False):
        """The lines received: the program's own (gpukit.metrics), or with library=True also
        the library's series, sent by its process publisher (asked to send at once)."""
        if library:
            _lib.gk_metrics_publish_now()
        lines = []
        while True:
            try:
                lines += sock.recv(65536).decode().split("\n")
            except socket.timeout:
                return lines if library else [x for x in lines if not x.startswith("gpukit_")]

    yield received
    monkeypatch.delenv("GK_METRICS_SOCKET")
    gpukit.metrics._reset_for_tests()
    sock.close()

