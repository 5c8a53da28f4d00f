"""A small launcher for multi-process tests: starts N copies of a Python script with the
variables torchrun sets (RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR,
MASTER_PORT), waits for all of them and exits with the first non-zero status. Debian's own
torchrun does not start on every Python version, so the tests use this instead.

usage: launch_ranks.py N SCRIPT [ARGS...]
"""
import os
import socket
import subprocess
import sys


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    n = int(sys.argv[1])
    port = str(free_port())
    procs = []
    for rank in range(n):
        env = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(n),
                   LOCAL_WORLD_SIZE=str(n), MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        procs.append(subprocess.Popen([sys.executable] + sys.argv[2:], env=env))
    status = 0
    for p in procs:
        rc = p.wait(timeout=600)
        if rc and not status:
            status = rc if rc > 0 else 128 - rc
    sys.exit(status)


if __name__ == "__main__":
    main()
