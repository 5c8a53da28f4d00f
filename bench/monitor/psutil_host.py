#!/usr/bin/env python3
"""The psutil calls that read what one gpukit host sample reads (CPU times total and per core,
memory, swap, load, every filesystem's usage, per-disk and per-interface counters). Prints the
median microseconds per full set over 9 rounds of 200 (the same protocol as bench_monitor)."""
import os
import statistics
import time

import psutil


def full_sample():
    psutil.cpu_times()
    psutil.cpu_times(percpu=True)
    psutil.virtual_memory()
    psutil.swap_memory()
    os.getloadavg()
    for part in psutil.disk_partitions():
        psutil.disk_usage(part.mountpoint)
    psutil.disk_io_counters(perdisk=True)
    psutil.net_io_counters(pernic=True)


def main():
    rounds = []
    for _ in range(9):
        t0 = time.perf_counter()
        for _ in range(200):
            full_sample()
        rounds.append((time.perf_counter() - t0) / 200 * 1e6)
    print(f"{statistics.median(rounds):.1f}")


if __name__ == "__main__":
    main()
