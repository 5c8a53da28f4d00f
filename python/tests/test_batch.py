"""find_batch_size over the C finder: a step on a sim device whose peak is a + k*b (the answer
within 5% of the true maximum, never above, in at most 4 trials), the measure= path, the other
modes, out-of-memory exceptions as failed trials with their memory released, other exceptions,
and the gauges it publishes under gpukit run."""
import pytest

import gpukit

MiB = 1 << 20


class Block:
    """A pool allocation freed when the object dies (as a framework's tensor is)."""

    def __init__(self, pool, nbytes):
        self.pool, self.ptr = pool, None
        self.ptr = pool.malloc(nbytes, tag="step")

    def __del__(self):
        if self.ptr is not None:
            self.pool.free(self.ptr)


def true_max(step, hi):
    """The largest b in [1, hi] for which step(b) does not run out of memory (by bisection)."""
    lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            step(mid)
            lo = mid
        except gpukit.OutOfMemoryError:
            hi = mid
    return lo


@pytest.mark.parametrize("a,k,blocks", [(200 * MiB, 3 * MiB, False), (10 * MiB, 700 * 1024, False),
                                        (64 * MiB, 2 * MiB, True)])
def test_sim_step_a_plus_kb(a, k, blocks):
    pool = gpukit.Pool("sim:capacity=1GiB")
    starts = []

    def step(b):
        starts.append(pool.memory_stats()["allocated_bytes.all.current"])
        if blocks:  # fixed part, then one activation block per sample
            held = [Block(pool, a)] + [Block(pool, k) for _ in range(b)]
        else:
            held = [Block(pool, a + k * b)]
        del held

    r = gpukit.find_batch_size(step, pool=pool)
    assert r.mode == "model" and len(r.trials) <= 4
    best = true_max(step, 1 << 16)
    assert r.batch <= best, (r.batch, best)
    assert r.batch >= 0.95 * best, (r.batch, best)
    assert r.trials[-1].batch == r.batch and r.trials[-1].fitted
    # The fitted model and the peaks the pool measured.
    assert abs(r.fit_k - k) / k < 0.02
    assert abs(r.fit_a - a) / a < 0.05 or abs(r.fit_a - a) < 4 * MiB
    for t in r.trials:
        if t.fitted:
            assert a + k * t.batch <= t.peak < a + k * t.batch + 4 * MiB
    assert r.budget > 0.9 * (1 << 30)
    assert all(s == 0 for s in starts)  # every trial started with nothing allocated


def test_measure_callback():
    a, k, budget = 1000.0, 37.0, 100000
    last = {}

    def step(b):
        if a + k * b > budget:
            raise gpukit.OutOfMemoryError(-4006, "simulated")
        last["b"] = b

    r = gpukit.find_batch_size(step, measure=lambda: int(a + k * last["b"]), budget=budget,
                               margin=0.02)
    exact = int((budget - a) // k)
    assert r.batch == int((budget - a) * (1 - 0.02) / k)
    assert 0.95 * exact <= r.batch <= exact
    assert len(r.trials) == 3 and r.ooms == 0
    assert [t.peak for t in r.trials] == [int(a + k * t.batch) for t in r.trials]
    assert r.fit_a == pytest.approx(a) and r.fit_k == pytest.approx(k)
    assert r.peak(10) == pytest.approx(a + 10 * k)
    assert r.budget == budget
    r = gpukit.find_batch_size(step, measure=lambda: int(a + k * last["b"]), budget=budget,
                               multiple_of=64, max_batch=1000)
    assert r.batch % 64 == 0 and r.batch <= 1000


class MyOOM(Exception):
    pass


@pytest.mark.parametrize("mode,want", [("binsearch", 300), ("power", 256), ("decay", 128)])
def test_other_modes(mode, want):
    tried = []

    def step(b):
        tried.append(b)
        if b > 300:
            raise MyOOM("too big")

    r = gpukit.find_batch_size(step, mode=mode, oom=MyOOM)
    assert r.batch == want and r.mode == mode
    assert [t.batch for t in r.trials] == tried
    assert r.ooms == sum(1 for b in tried if b > 300)


def test_cuda_out_of_memory_runtime_error():
    """gpukit's allocator inside PyTorch (and PyTorch before torch.cuda.OutOfMemoryError) raise
    RuntimeError("CUDA out of memory. ..."): a failed trial; any other RuntimeError stops."""
    def step(b):
        if b > 300:
            raise RuntimeError("CUDA out of memory. gpukit's pool could not allocate %d bytes" % b)

    r = gpukit.find_batch_size(step, mode="binsearch")
    assert r.batch == 300 and r.ooms >= 1

    def broken(b):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    with pytest.raises(RuntimeError, match="illegal memory access"):
        gpukit.find_batch_size(broken, mode="binsearch")


def test_decay_shrinks_from_init():
    r = gpukit.find_batch_size(lambda b: (_ for _ in ()).throw(MyOOM()) if b > 100 else None,
                               mode="decay", oom=(MyOOM,))
    assert [t.batch for t in r.trials] == [128, 115, 103, 92]
    assert r.batch == 92


def test_memory_is_released_after_an_oom():
    """The step holds a block in its frame when it runs out of memory; the finder drops the
    exception's frames and collects before the next trial."""
    pool = gpukit.Pool("sim:capacity=256MiB")
    starts = []

    def step(b):
        starts.append(pool.memory_stats()["allocated_bytes.all.current"])
        fixed = Block(pool, 16 * MiB)  # alive in this frame at the OOM ...
        fixed.cycle = fixed  # ... in a reference cycle, as model graphs often are
        act = Block(pool, b * MiB)
        del act, fixed.cycle  # a step that ends breaks its cycle; one that fails does not

    r = gpukit.find_batch_size(step, pool=pool, mode="binsearch")  # doubles into an OOM
    assert r.ooms >= 2 and r.batch >= 200
    assert starts and all(s == 0 for s in starts), starts
    assert pool.memory_stats()["allocated_bytes.all.current"] == 0


def test_other_exceptions_stop_the_search():
    calls = []

    def step(b):
        calls.append(b)
        if b == 8:
            raise KeyError("no such layer")

    with pytest.raises(KeyError, match="no such layer"):
        gpukit.find_batch_size(step, measure=lambda: 1000, budget=10 ** 9)
    assert calls == [2, 8]


def test_failures():
    pool = gpukit.Pool("sim:capacity=64MiB")

    def step(b):
        Block(pool, 128 * MiB)

    with pytest.raises(gpukit.OutOfMemoryError) as e:
        gpukit.find_batch_size(step, pool=pool)
    assert "not even batch" in e.value.message
    with pytest.raises(gpukit.Error) as e:
        gpukit.find_batch_size(lambda b: None, pool=pool, margin=1.5)
    assert e.value.name == "EINVAL" and "margin" in e.value.message
    with pytest.raises(gpukit.Error, match="greedy"):
        gpukit.find_batch_size(lambda b: None, pool=pool, mode="greedy")
    with pytest.raises(ValueError, match="measures each trial's peak"):
        gpukit.find_batch_size(lambda b: None)
    with pytest.raises(gpukit.Error, match="budget"):
        gpukit.find_batch_size(lambda b: None, measure=lambda: 1)
    with pytest.raises(gpukit.Error, match="max_trials"):
        gpukit.find_batch_size(lambda b: None, mode="power", max_trials=3)


def test_published_under_gpukit_run(statsd):
    last = {}

    def step(b):
        last["b"] = b

    r = gpukit.find_batch_size(step, measure=lambda: 5000 + 100 * last["b"], budget=10 ** 6)
    lines = [x.split("|#")[0] for x in statsd(library=True)]
    assert "gpukit_batch_size:%d|g" % r.batch in lines
    assert "gpukit_batch_per_sample_bytes:100|g" in lines
    assert "gpukit_batch_fixed_bytes:5000|g" in lines
