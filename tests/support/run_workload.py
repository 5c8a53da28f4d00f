#!/usr/bin/env python3
"""A known workload for the `gpukit run` integration tests.

It burns a given amount of CPU time (measured with process_time, so the amount does not depend
on how busy the machine is), spawns children that burn their own, holds a known amount of
memory, sends known StatsD metrics to GK_METRICS_SOCKET, and ends with a known status or signal.
The metric values are the configured ones, never measured, so recordings of the same workload
compare as equal.
"""
import argparse
import os
import signal
import socket
import sys
import time


def burn(seconds):
    end = time.process_time() + seconds
    x = 0
    while time.process_time() < end:
        x += 1
    return x


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--burn", type=float, default=0.0)
    p.add_argument("--children", type=int, default=0)
    p.add_argument("--child-burn", type=float, default=0.2)
    p.add_argument("--alloc-mb", type=int, default=0)
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--step-ms", type=float, default=10.0)
    p.add_argument("--throughput", type=float, default=0.0)
    p.add_argument("--loader-wait-ms", type=float, default=0.0)
    p.add_argument("--malformed", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0)
    p.add_argument("--pidfile")
    p.add_argument("--kill-self", action="store_true")
    p.add_argument("--exit", type=int, default=0)
    a = p.parse_args()

    path = os.environ.get("GK_METRICS_SOCKET")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if path else None

    def send(line):
        if sock:
            sock.sendto(line.encode(), path)

    held = bytearray(a.alloc_mb << 20)
    for i in range(0, len(held), 4096):
        held[i] = 1  # touch every page so it is resident

    kids = []
    for _ in range(a.children):
        pid = os.fork()
        if pid == 0:
            burn(a.child_burn)
            os._exit(0)
        kids.append(pid)
    burn(a.burn)
    for pid in kids:
        os.waitpid(pid, 0)

    for i in range(a.steps):
        jitter = 1 + 0.01 * ((i % 3) - 1)
        lines = ["step_time:%g|ms" % (a.step_ms * jitter), "batches:1|c"]
        if a.throughput:
            lines.append("samples_per_second:%g|g|#phase:train" % (a.throughput * jitter))
        if a.loader_wait_ms:
            lines.append("loader_wait:%g|ms" % a.loader_wait_ms)
        send("\n".join(lines))
        time.sleep(0.002)
    for i in range(a.malformed):
        send("this is not statsd %d" % i)

    if a.pidfile:  # written once the metrics are sent, so a test can signal right away
        with open(a.pidfile + ".tmp", "w") as f:
            f.write(str(os.getpid()))
        os.rename(a.pidfile + ".tmp", a.pidfile)
    if a.sleep:
        time.sleep(a.sleep)
    del held
    if a.kill_self:
        os.kill(os.getpid(), signal.SIGKILL)
    sys.exit(a.exit)


if __name__ == "__main__":
    main()
