#!/usr/bin/env python3
"""examples/send_metrics.py: send a program's metrics to `gpukit run`, standard library only.

    gpukit run -- python3 examples/send_metrics.py [STEPS]

Under `gpukit run` the environment has GK_METRICS_SOCKET, a Unix datagram socket that takes
StatsD lines: name:value|g (gauge), |c (counter increment), |ms (duration), |h (distribution),
with optional |#tag:value tags. Outside gpukit run the variable is unset and nothing is sent.
"""
import math
import os
import socket
import sys
import time

path = os.environ.get("GK_METRICS_SOCKET")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) if path else None


def send(line):
    """Sends one line; never blocks and never fails the program (a full socket drops it)."""
    if sock:
        try:
            sock.sendto(line.encode(), socket.MSG_DONTWAIT, path)
        except OSError:
            pass


steps = int(sys.argv[1]) if len(sys.argv) > 1 else 50
for step in range(1, steps + 1):
    t0 = time.perf_counter()
    loss = 2.0 * math.exp(-step / 10) + 0.1      # stands in for a real training step
    time.sleep(0.01)
    send(f"py_loss:{loss:.6f}|g")
    send(f"py_step_time:{(time.perf_counter() - t0) * 1000:.3f}|ms")
    send("py_steps_total:1|c|#phase:train")
print(f"sent {steps} steps of metrics" + (f" to {path}" if path else " (GK_METRICS_SOCKET unset: nothing sent)"))
