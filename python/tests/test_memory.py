"""MemoryManager over the C pressure policy: a pool on sim squeezed mid-run calls the application
back with the model's suggestion; "checkpoint" when not even batch 1 fits; hysteresis; trims
only with low free memory and cached memory to give back; never empties the cache because
allocated memory is high; figures from a read= callable; publishing under gpukit run."""
import pytest

import gpukit

MiB = 1 << 20


def test_squeezed_pool_calls_back_with_the_models_batch():
    pool = gpukit.Pool("sim:capacity=512MiB")
    a, k = 40 * MiB, 2 * MiB
    calls = []
    mm = gpukit.MemoryManager(pool=pool, model=(a, k), hysteresis=2,
                              on_pressure=lambda level, b: calls.append((level, b)))
    batch = 200

    def train_step():
        p = pool.malloc(a + k * batch)
        pool.free(p)

    for _ in range(5):  # 440 MiB of 512: below the 95% line, no shrink
        train_step()
        assert "shrink" not in mm.step().actions
    assert calls == []
    pool.limit = 400 * MiB  # a co-tenant arrives: the budget drops under the step's peak
    pool.trim(400 * MiB)
    seen = []
    for _ in range(2):
        try:
            train_step()
        except gpukit.OutOfMemoryError:
            pass
        seen.append(mm.step())
    want = int((400 * MiB * (1 - 0.05) - a) // k)
    assert calls == [("shrink", want)]  # after `hysteresis` steps, not before
    assert "shrink" not in seen[0].actions and "shrink" in seen[1].actions
    assert seen[1].suggested_batch == want and seen[1].budget == 400 * MiB
    batch = want
    for _ in range(6):  # the smaller batch fits: the peak was reset, no more calls
        train_step()
        mm.step()
    assert calls == [("shrink", want)]


def test_checkpoint_when_not_even_batch_one_fits():
    pool = gpukit.Pool("sim:capacity=256MiB", limit="100MiB")
    calls = []
    mm = gpukit.MemoryManager(pool=pool, model=(120 * MiB, MiB), hysteresis=1,
                              on_pressure=lambda level, b: calls.append((level, b)))
    p = pool.malloc(99 * MiB)
    r = mm.step()
    pool.free(p)
    assert calls == [("checkpoint", 1)] and r.checkpointing


def test_allocated_high_never_empties_the_cache():
    """Nearly all device memory is in live allocations: the policy must not give the cache
    back (it cannot lower allocated memory and would turn cache hits into device calls)."""
    pool = gpukit.Pool("sim:capacity=256MiB", preset="pytorch")
    live = [pool.malloc(20 * MiB) for _ in range(11)]
    cached = pool.malloc(2 * MiB)  # a 20 MiB segment, mostly cached once freed
    pool.free(cached)
    reserved = pool.memory_stats()["reserved_bytes.all.current"]
    assert reserved == 240 * MiB
    mm = gpukit.MemoryManager(pool=pool, hysteresis=1, shrink_high=0, free_low=0.1, gc_high=0)
    for _ in range(5):  # free memory is low (16 of 256 MiB), but only 20 MiB is cached
        assert "trim" not in mm.step().actions
    assert pool.memory_stats()["reserved_bytes.all.current"] == reserved
    # With 120 MiB cached and low free memory, the trim runs and gives the cache back.
    for p in live[:6]:
        pool.free(p)
    assert "trim" in mm.step().actions
    assert pool.memory_stats()["reserved_bytes.all.current"] == 100 * MiB
    for p in live[6:]:
        pool.free(p)


def test_figures_from_a_read_callable():
    state = dict(device_free=900 * MiB, device_total=1000 * MiB, reserved=80 * MiB,
                 allocated=10 * MiB, peak_allocated=20 * MiB)
    read = lambda: gpukit.MemoryFigures(**state)
    mm = gpukit.MemoryManager(read=read, hysteresis=3, gc_high=0)
    assert mm.step().actions == frozenset()
    state["device_free"] = 10 * MiB  # low free memory with 70 MiB cached: trim, after 3 steps
    steps = [mm.step() for _ in range(3)]
    assert [s.actions for s in steps] == [frozenset(), frozenset(), frozenset({"trim"})]
    assert steps[-1].figures == gpukit.MemoryFigures(**state)
    assert steps[-1].budget == 90 * MiB  # reserved + free
    # Without a pool the actions are only reported: the caller's allocator carries them out.
    mm = gpukit.MemoryManager(read=read, hysteresis=1, gc_high=0.5)
    assert mm.step().actions == frozenset({"collect", "trim"})  # 80 MiB > half of 90 MiB


def test_read_figures_shrink_proportional():
    state = dict(device_free=0, device_total=1000 * MiB, reserved=100 * MiB,
                 allocated=100 * MiB, peak_allocated=99 * MiB)
    calls = []
    mm = gpukit.MemoryManager(read=lambda: gpukit.MemoryFigures(**state), hysteresis=2,
                              batch=64, on_pressure=lambda *a: calls.append(a), gc_high=0)
    state["allocated"] = 90 * MiB
    mm.step()
    r = mm.step()
    assert r.actions == frozenset({"shrink"})
    want = int(64 * (100 * MiB * 0.95) // (99 * MiB))
    assert calls == [("shrink", want)] and r.suggested_batch == want
    mm.batch = 32  # the proportional advice now starts from 32
    mm.step()
    mm.step()
    assert calls[-1] == ("shrink", int(32 * (100 * MiB * 0.95) // (99 * MiB)))


def test_bad_figures_and_sources():
    mm = gpukit.MemoryManager(read=lambda: gpukit.MemoryFigures(10, 5, 0, 0, 0))
    with pytest.raises(gpukit.Error) as e:
        mm.step()
    assert e.value.name == "EINVAL" and "device_free 10 > device_total 5" in e.value.message
    with pytest.raises(gpukit.Error, match="hysteresis"):
        gpukit.MemoryManager(read=lambda: None, hysteresis=0)
    import sys
    if "torch" not in sys.modules or not sys.modules["torch"].cuda.is_available():
        with pytest.raises(ValueError, match="needs pool="):
            gpukit.MemoryManager()


def test_publishes_the_figures_it_read(statsd):
    fig = gpukit.MemoryFigures(device_free=500, device_total=1000, reserved=300, allocated=200,
                               peak_allocated=250)
    mm = gpukit.MemoryManager(read=lambda: fig)
    mm.step()
    # The library's publisher sends them as a pool's series, labelled as the manager's.
    lines = [x for x in statsd(library=True) if x.endswith("|#device:unknown,pool:custom")]
    assert "gpukit_alloc_in_use_bytes:200|g|#device:unknown,pool:custom" in lines
    assert "gpukit_alloc_reserved_bytes:300|g|#device:unknown,pool:custom" in lines
    assert not any(line.startswith("gpukit_alloc_ooms_total") for line in lines)  # unknown
