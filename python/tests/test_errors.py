"""gpukit.Error and gpukit.OutOfMemoryError: the code, its name and the library's message, read on
the failing thread (two threads failing at once each get their own), and the pool's
out-of-memory report; devices and pools with bad settings."""
import threading

import pytest

import gpukit

MiB = 1 << 20


def test_error_carries_code_name_and_message():
    with pytest.raises(gpukit.Error) as e:
        gpukit.Device("sim:capacity=12Q")
    err = e.value
    assert err.code == -22 and err.name == "EINVAL"
    assert "12Q" in err.message and "try" in err.message  # names the value and the fix
    assert str(err) == "%s (EINVAL)" % err.message
    assert isinstance(err, RuntimeError)
    with pytest.raises(gpukit.Error, match="unknown backend"):
        gpukit.Device("tpu:0")


def test_out_of_memory_carries_the_pools_report():
    pool = gpukit.Pool("sim:capacity=64MiB")
    keep = pool.malloc(40 * MiB, tag="weights")
    with pytest.raises(gpukit.OutOfMemoryError) as e:
        pool.malloc(48 * MiB)
    err = e.value
    assert isinstance(err, gpukit.Error) and err.name == "GK_EDEVOOM" and err.code == -4006
    assert "48.00 MiB" in err.report and "weights" in err.report and "Hint:" in err.report
    assert err.report == pool.oom_report()
    assert err.report in str(err)
    pool.free(keep)
    assert "allocated_bytes.all.current" in pool.memory_stats()


def test_pool_settings_and_stats():
    with pytest.raises(gpukit.Error) as e:
        gpukit.Pool("sim", nonsense=1)
    assert e.value.name == "ENOENT" and "nonsense" in e.value.message
    with pytest.raises(gpukit.Error, match="tensorflow"):
        gpukit.Pool("sim", preset="tensorflow")
    with pytest.raises(gpukit.Error) as e:
        gpukit.Pool("sim", limit="12Q")
    assert "12Q" in e.value.message
    pool = gpukit.Pool("sim:capacity=1GiB", limit="256MiB", max_split_size="64MiB")
    assert pool.limit == 256 * MiB
    p = pool.malloc(3 * MiB)
    st = pool.memory_stats()
    assert st["allocated_bytes.all.current"] >= 3 * MiB and st["num_ooms"] == 0
    assert "| Allocated memory      |   3072 KiB |" in pool.summary()
    assert pool.snapshot()["segments"]
    pool.free(p)
    with pytest.raises(gpukit.Error) as e:
        pool.free(0x1234)
    assert e.value.name == "EINVAL"
    pool.close()
    with pytest.raises(gpukit.Error, match="closed"):
        pool.malloc(1)


def test_messages_are_per_thread():
    """Two threads failing on one pool at once: each exception holds its own message."""
    pool = gpukit.Pool("sim:capacity=64MiB", from_env=False)
    wrong = []

    def fail_many(bogus):
        for _ in range(300):
            try:
                pool.free(bogus)
            except gpukit.Error as e:
                if "%x" % bogus not in e.message:
                    wrong.append(e.message)

    threads = [threading.Thread(target=fail_many, args=(b,)) for b in (0x1111000, 0x2222000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_device_properties():
    with gpukit.Device("sim:capacity=2GiB") as dev:
        assert dev.backend == "sim" and dev.total_memory == 2 << 30
        free, total = dev.mem_info()
        assert total == 2 << 30 and free == total
        assert dev.props()["has_vm"] in (0, 1)
    with pytest.raises(gpukit.Error, match="closed"):
        dev.mem_info()
    auto = gpukit.Device("auto")
    assert auto.backend in ("host", "cuda")
    if auto.backend == "host":
        assert "using host" in auto.auto_reason
