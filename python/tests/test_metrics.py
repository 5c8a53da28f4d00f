"""gpukit.metrics: the lines that reach gpukit run's socket, the no-op path without it (the library
asked once, nothing opened), refused names warn instead of raising, thread safety, and
gpukit.torch.report_memory."""
import os
import threading
import time

import pytest

import gpukit
import gpukit.metrics as gm


def test_no_socket_is_a_no_op(monkeypatch):
    monkeypatch.delenv("GK_METRICS_SOCKET", raising=False)
    gm._reset_for_tests()
    asked = []
    real = gm._open

    def counting_open():
        asked.append(1)
        return real()

    monkeypatch.setattr(gm, "_open", counting_open)
    fds = len(os.listdir("/proc/self/fd"))
    for i in range(1000):
        gm.gauge("loss", i, phase="train")
        gm.counter("steps")
        gm.timing("step_time", 1.5)
        with gm.timer("t"):
            pass
        gm.gauge("not a valid name!", 1)  # not even checked: nothing is sent
    assert asked == [1]  # the library was asked once
    assert gm.active() is False and gm.dropped() == 0
    assert len(os.listdir("/proc/self/fd")) == fds  # no socket was opened


def test_lines_reach_the_socket(statsd):
    gm.gauge("train_loss", 0.25)
    gm.counter("samples_total", 32, phase="train", rank=0)
    gm.counter("steps_total")
    gm.timing("train_step_time", 12.5)
    with gm.timer("block_time", what="io"):
        time.sleep(0.002)
    lines = statsd()
    assert "train_loss:0.25|g" in lines
    assert "samples_total:32|c|#phase:train,rank:0" in lines
    assert "steps_total:1|c" in lines
    assert "train_step_time:12.5|ms" in lines
    timed = [x for x in lines if x.startswith("block_time:")]
    assert len(timed) == 1 and timed[0].endswith("|ms|#what:io")
    assert float(timed[0].split(":")[1].split("|")[0]) >= 2.0
    assert gm.active() is True


def test_refused_metrics_warn_once_and_never_raise(statsd):
    with pytest.warns(RuntimeWarning, match="bad name!"):
        gm.gauge("bad name!", 1)
    with pytest.warns(RuntimeWarning, match="not a finite number"):
        gm.gauge("nan_value", float("nan"))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gm.gauge("bad name!", 2)  # the second time: silent
    gm.gauge("good", 1)
    assert statsd() == ["good:1|g"]


def test_threads_share_the_client(statsd):
    def send(t):
        for i in range(50):
            gm.counter("c_total", 1, thread=t)

    threads = [threading.Thread(target=send, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [x for x in statsd() if x]
    assert len(lines) + gm.dropped() == 200
    assert all(x.startswith("c_total:1|c|#thread:") for x in lines)


def test_report_memory_without_cuda(statsd):
    torch = pytest.importorskip("torch", reason="python3-torch is installed by scripts/deps.sh")
    import gpukit.torch as gt
    if torch.cuda.is_available():
        assert gt.report_memory() is True
        assert any(x.startswith("gpukit_alloc_reserved_bytes:") for x in statsd(library=True))
    else:
        assert gt.report_memory() is False
        assert statsd() == []


def test_alloc_figures_mapping():
    pytest.importorskip("torch", reason="python3-torch is installed by scripts/deps.sh")
    import gpukit.torch.memory as tm
    names = [f for f, _ in gpukit._structs.gk_alloc_figures._fields_][1:]
    assert sorted(n for _, n in tm._KEYS) == sorted(names)  # every figure has its torch key
