"""gpukit's pool as PyTorch's (and CuPy's) allocator, without a GPU.

The shim's C entry points are called through ctypes with PyTorch's argument types, on `sim`
through the shim's test switch (gk_torch_test_use_sim, streams from gk_torch_test_stream_create):
allocate and free, stream-aware reuse, record_stream, statistics equal to the pool's own on every
key (the pool's struct is mirrored from pool.h's lists), out-of-memory returning NULL with the
report kept, the side API. Debian's torch 1.13 has no CUDAPluggableAllocator: the install path is
tested against stand-ins that do what PyTorch does with the shim (load it by path, find the two
symbols, call them), and CuPy's path against a stand-in module; the real CuPy test runs where
CuPy and a GPU are present.
"""
import ctypes
import os
import re
import sys
import types
from ctypes import c_int, c_int64, c_size_t, c_ssize_t, c_uint64, c_void_p

import pytest

import gpukit
from gpukit import _shim

torch = pytest.importorskip("torch")
import gpukit.torch as gt  # noqa: E402
from gpukit.torch import allocator  # noqa: E402

from conftest import SOURCE  # noqa: E402

MiB = 1 << 20
KINDS = ("all", "small_pool", "large_pool")


@pytest.fixture
def shim():
    """The shim on sim (256 MiB per device), fresh, and fresh again afterwards."""
    _shim.shutdown()
    allocator._installed = None
    lib = _shim.load()
    assert lib.gk_torch_test_use_sim(b"sim:capacity=256MiB") == 0
    yield lib
    _shim.shutdown()
    allocator._installed = None


def stream(lib, device=0):
    s = c_void_p()
    _shim.check(lib.gk_torch_test_stream_create(device, ctypes.byref(s)))
    return s.value


# --- the pool's statistics struct, mirrored from pool.h --------------------------------------


class Stat(ctypes.Structure):
    _fields_ = [("current", c_int64), ("peak", c_int64), ("allocated", c_uint64),
                ("freed", c_uint64)]


def _macro_names(text, macro):
    m = re.search(r"#define %s\(XX\)((?:[^\n]*\\\n)*[^\n]*)" % macro, text)
    return re.findall(r"XX\((\w+),", m.group(1))


def stats_mirror():
    """(ctypes struct of gk_pool_stats, [(key, getter)]) from pool.h: every field, every key."""
    text = open(os.path.join(SOURCE, "include", "gpukit", "pool.h")).read()
    arrays = _macro_names(text, "GK_POOL_STAT_MAP")
    counters = _macro_names(text, "GK_POOL_COUNTER_MAP")
    body = text[text.index("#undef GK__POOL_COUNTER_FIELD"):text.index("} gk_pool_stats;")]
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
    tail = re.findall(r"(gk_pool_stat|uint64_t|double)\s+(\w+);", body)
    types_ = {"gk_pool_stat": Stat, "uint64_t": c_uint64, "double": ctypes.c_double}
    fields = [("size", c_size_t)] + [(n, Stat * 3) for n in arrays] + \
        [(n, c_uint64) for n in counters] + [(n, types_[t]) for t, n in tail]
    cls = type("gk_pool_stats", (ctypes.Structure,), {"_fields_": fields})
    keys = []
    for n in arrays:
        for k, kind in enumerate(KINDS):
            for f in ("current", "peak", "allocated", "freed"):
                keys.append(("%s.%s.%s" % (n, kind, f),
                             lambda s, n=n, k=k, f=f: getattr(getattr(s, n)[k], f)))
    for n in counters:
        keys.append((n, lambda s, n=n: getattr(s, n)))
    for t, n in tail:
        if t == "gk_pool_stat":
            for f in ("current", "peak", "allocated", "freed"):
                keys.append(("%s.%s" % (n, f), lambda s, n=n, f=f: getattr(getattr(s, n), f)))
        else:
            keys.append((n, lambda s, n=n: getattr(s, n)))
    return cls, keys


def pool_struct(lib, device=0):
    cls, keys = stats_mirror()
    st = cls()
    st.size = ctypes.sizeof(cls)
    _shim.check(lib.gk_torch_get_stats(device, ctypes.byref(st), ctypes.sizeof(st)))
    assert st.size == ctypes.sizeof(cls), "pool.h's gk_pool_stats and the mirror differ"
    return st, keys


def assert_parity(lib, device=0):
    st, keys = pool_struct(lib, device)
    got = gt.memory_stats(device)
    assert set(got) == {k for k, _ in keys}, "memory_stats() keys differ from the pool's fields"
    for key, get in keys:
        want = get(st)
        assert got[key] == pytest.approx(want), key
    return got


# --- the C entry points through ctypes --------------------------------------------------------


def test_entry_points_have_pytorchs_types(shim):
    # PyTorch calls void*(size_t, int, cudaStream_t) and void(void*, size_t, int, cudaStream_t).
    alloc = ctypes.CFUNCTYPE(c_void_p, c_size_t, c_int, c_void_p)(
        ctypes.cast(shim.gk_torch_malloc, c_void_p).value)
    free = ctypes.CFUNCTYPE(None, c_void_p, c_size_t, c_int, c_void_p)(
        ctypes.cast(shim.gk_torch_free, c_void_p).value)
    p = alloc(1000, 0, None)
    assert p
    st = gt.memory_stats(0)
    assert st["allocated_bytes.all.current"] == 1024 and st["requested_bytes.all.current"] == 1000
    free(p, 1000, 0, None)
    assert gt.memory_stats(0)["allocated_bytes.all.current"] == 0
    q = alloc(1000, 0, None)
    assert q == p  # the cached block again, no device call
    assert gt.memory_stats()["num_cache_hits"] == 1 and gt.memory_stats()["num_device_alloc"] == 1
    free(q, 1000, 0, None)
    assert alloc(0, 0, None) is None  # size 0: NULL, as PyTorch's own allocator answers
    assert gt.last_oom_report() == ""


def test_streams_are_reused_only_by_their_own(shim):
    s1, s2 = stream(shim), stream(shim)
    a = shim.gk_torch_malloc(4 * MiB, 0, s1)
    shim.gk_torch_free(a, 4 * MiB, 0, s1)
    b = shim.gk_torch_malloc(4 * MiB, 0, s2)
    assert b != a
    assert shim.gk_torch_malloc(4 * MiB, 0, s1) == a
    # record_stream through the Python API: a stand-in tensor with PyTorch's attributes.
    storage = types.SimpleNamespace(data_ptr=lambda: a)
    tensor = types.SimpleNamespace(untyped_storage=lambda: storage,
                                   device=torch.device("cuda", 0))
    gt.record_stream(tensor, types.SimpleNamespace(cuda_stream=s2))
    shim.gk_torch_free(a, 4 * MiB, 0, s1)
    assert gt.memory_stats()["active_bytes.all.current"] == 8 * MiB  # waits on s2's event
    bad = types.SimpleNamespace(untyped_storage=lambda: types.SimpleNamespace(
        data_ptr=lambda: a + 512), device=torch.device("cuda", 0))
    with pytest.raises(gpukit.Error) as e:
        gt.record_stream(bad, s2)
    assert e.value.name == "EINVAL"
    shim.gk_torch_free(b, 4 * MiB, 0, s2)
    assert_parity(shim)
    _shim.check(shim.gk_torch_test_stream_destroy(0, s1))
    _shim.check(shim.gk_torch_test_stream_destroy(0, s2))
    assert gt.memory_stats()["active_bytes.all.current"] == 0


def test_memory_stats_equal_the_pools_on_every_key(shim):
    s = stream(shim)
    held = []
    for i in range(60):  # small and large, two streams, frees in between
        size = (i % 7 + 1) * 300 * 1024 if i % 3 else (i % 5 + 1) * 3 * MiB + 123
        held.append((shim.gk_torch_malloc(size, 0, s if i % 2 else None), size))
        if i % 4 == 3:
            p, n = held.pop(0)
            shim.gk_torch_free(p, n, 0, None)
    assert shim.gk_torch_malloc(300 * MiB, 0, None) is None  # an OOM counted
    got = assert_parity(shim)
    assert got["num_ooms"] == 1 and got["allocation.all.current"] == len(held)
    gt.reset_peak_memory_stats(0)
    assert_parity(shim)
    gt.reset_accumulated_memory_stats()
    got = assert_parity(shim)
    assert got["num_ooms"] == 0 and got["allocation.all.allocated"] == 0
    for p, n in held:
        shim.gk_torch_free(p, n, 0, None)
    gt.empty_cache()
    got = assert_parity(shim)
    assert got["reserved_bytes.all.current"] == 0
    assert list(got) == sorted(got)  # PyTorch's order
    # Convenience readers take the same keys.
    assert gt.memory_reserved() == 0 and gt.max_memory_reserved(0) > 0
    assert gt.memory_allocated("cuda:0") == 0
    # Device 1 has its own pool; a device never used reads as zeros.
    p = shim.gk_torch_malloc(MiB, 1, None)
    assert gt.memory_stats(1)["allocated_bytes.all.current"] == MiB
    assert gt.memory_stats(torch.device("cuda", 2))["reserved_bytes.all.peak"] == 0
    shim.gk_torch_free(p, MiB, 1, None)
    with pytest.raises(ValueError, match="not a CUDA device"):
        gt.memory_stats("cpu")
    with pytest.raises(gpukit.Error, match="device 64 is not a CUDA ordinal"):
        gt.memory_stats(64)


def test_out_of_memory_is_null_with_the_report_kept(shim):
    keep = shim.gk_torch_malloc(200 * MiB, 0, None)
    assert keep
    assert shim.gk_torch_malloc(100 * MiB, 0, None) is None
    report = gt.last_oom_report()
    assert "out of device memory" in report and "104857600" in report
    assert "Largest live blocks" in report
    assert gt.memory_stats()["num_ooms"] == 1
    # The Python-side caller (CuPy's path) raises gpukit.OutOfMemoryError with the report.
    with pytest.raises(gpukit.OutOfMemoryError) as e:
        _shim.malloc(100 * MiB, 0, None)
    assert e.value.report.startswith("out of device memory")
    with pytest.raises(gpukit.Error, match="negative"):
        _shim.malloc(-1, 0, None)
    assert "size -1 is negative" in gt.last_oom_report()
    shim.gk_torch_free(keep, 0, 0, None)


def test_summary_and_snapshot(shim):
    p = shim.gk_torch_malloc(3 * MiB, 0, None)
    assert "memory summary" in gt.memory_summary()
    segs = gt.memory_snapshot()
    assert len(segs) == 1
    seg = segs[0]
    for key in ("address", "total_size", "stream", "segment_type", "allocated_size",
                "active_size", "requested_size", "blocks", "device"):
        assert key in seg, key
    assert seg["allocated_size"] == 3 * MiB
    live = [b for b in seg["blocks"] if b["state"] == "active_allocated"]
    assert [(b["address"], b["size"]) for b in live] == [(p, 3 * MiB)]
    assert "device_traces" in gt.snapshot(0)
    shim.gk_torch_free(p, 0, 0, None)


def test_settings_are_checked_and_shared(shim, monkeypatch):
    with pytest.raises(gpukit.Error, match="limt"):
        _shim.configure("default", "limt=1MiB")
    with pytest.raises(gpukit.Error, match="max_split_size must exceed large_segment"):
        _shim.configure("default", {"max_split_size": "8MiB"})
    monkeypatch.setenv("GK_POOL_CONF", "limit=64MiB")
    _shim.configure("pytorch", {"max_split_size": "32MiB", "expandable_segments": False})
    assert shim.gk_torch_malloc(100 * MiB, 0, None) is None  # GK_POOL_CONF's limit
    st = gt.memory_stats()
    assert st["limit"] == 64 * MiB and st["max_split_size"] == 32 * MiB
    # The pools exist: the same settings are accepted again (PyTorch and CuPy share them).
    _shim.configure("pytorch", {"max_split_size": "32MiB", "expandable_segments": False})
    with pytest.raises(gpukit.Error, match="before the first CUDA allocation") as e:
        _shim.configure("default", None)
    assert e.value.name == "EBUSY"


# --- use_gpukit_allocator against stand-ins for PyTorch 2.x ----------------------------------


class FakePluggable:
    """What torch.cuda.memory.CUDAPluggableAllocator does with the shim: dlopen it by path and
    take the two functions by name, with PyTorch's signatures."""
    made = []

    def __init__(self, path, alloc_name, free_name):
        lib = ctypes.CDLL(path)
        self.path, self.names = path, (alloc_name, free_name)
        self.alloc = ctypes.CFUNCTYPE(c_void_p, c_size_t, c_int, c_void_p)(
            ctypes.cast(getattr(lib, alloc_name), c_void_p).value)
        self.free = ctypes.CFUNCTYPE(None, c_void_p, c_size_t, c_int, c_void_p)(
            ctypes.cast(getattr(lib, free_name), c_void_p).value)
        FakePluggable.made.append(self)

    def allocator(self):
        return ("allocator of", self)


@pytest.fixture
def torch2(shim, monkeypatch):
    """The real torch with PyTorch 2.x's pluggable-allocator calls standing in."""
    swapped = []
    FakePluggable.made = []

    def change(alloc):
        if swapped and swapped[-1] == "initialized":
            raise RuntimeError("Can't swap an already initialized allocator")
        swapped.append(alloc)

    monkeypatch.setattr(torch.cuda.memory, "CUDAPluggableAllocator", FakePluggable,
                        raising=False)
    monkeypatch.setattr(torch.cuda.memory, "change_current_allocator", change, raising=False)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    return swapped


def test_without_pluggable_allocator_the_error_names_the_pytorch_needed(shim, monkeypatch):
    monkeypatch.delattr(torch.cuda.memory, "CUDAPluggableAllocator", raising=False)
    with pytest.raises(RuntimeError, match="PyTorch 2.0 added; this PyTorch is %s"
                       % re.escape(torch.__version__)):
        gt.use_gpukit_allocator()
    assert not gt.is_active()


def test_install_loads_the_shim_by_path_and_names(torch2, shim):
    alloc = gt.use_gpukit_allocator(conf="max_split_size=64MiB")
    assert torch2 == [alloc] and gt.is_active()
    assert os.path.basename(alloc.path) == "libgpukit_torch.so"
    assert alloc.names == ("gk_torch_malloc_raise", "gk_torch_free")
    # PyTorch's calls reach the same pools as the side API.
    p = alloc.alloc(5 * MiB, 0, None)
    assert gt.memory_stats()["allocated_bytes.all.current"] == 5 * MiB
    assert gt.memory_stats()["max_split_size"] == 64 * MiB
    assert gt.use_gpukit_allocator(conf="max_split_size=64MiB") is alloc  # again: nothing new
    with pytest.raises(gpukit.Error) as e:
        gt.use_gpukit_allocator(conf="max_split_size=128MiB")  # the pool exists
    assert e.value.name == "EBUSY"
    alloc.free(p, 5 * MiB, 0, None)
    assert gt.memory_stats()["allocated_bytes.all.current"] == 0
    # The figures gpukit run would get come from the pool (PyTorch's memory_stats would raise).
    f = gt.alloc_figures(0)
    assert f.reserved_bytes == gt.memory_reserved()
    assert gt.report_memory() is False  # the pools publish themselves under gpukit run


def test_install_after_cuda_init_says_to_call_it_first(torch2, shim, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(RuntimeError, match="top of the script") as e:
        gt.use_gpukit_allocator()
    assert "gpukit.torch.use_gpukit_allocator()" in str(e.value)
    assert torch2 == [] and not gt.is_active()
    # PyTorch's own refusal (CUDA initialized by a path is_initialized does not see).
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    torch2.append("initialized")
    with pytest.raises(RuntimeError, match="before CUDA is initialized"):
        gt.use_gpukit_allocator()
    assert not gt.is_active()


def test_install_with_bad_settings_installs_nothing(torch2, shim):
    with pytest.raises(gpukit.Error, match="limt"):
        gt.use_gpukit_allocator(conf="limt=1GiB")
    with pytest.raises(gpukit.Error, match="fast"):
        gt.use_gpukit_allocator(preset="fast")
    assert torch2 == [] and not gt.is_active()


def test_scoped_mem_pool(torch2, shim, monkeypatch):
    with pytest.raises(RuntimeError, match="MemPool"):
        with gt.gpukit_mem_pool():
            pass
    used = []

    class MemPool:
        def __init__(self, allocator):
            self.allocator = allocator

    class use_mem_pool:
        def __init__(self, pool, device=None):
            used.append((pool, device))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            used.append("left")

    monkeypatch.setattr(torch.cuda, "MemPool", MemPool, raising=False)
    monkeypatch.setattr(torch.cuda, "use_mem_pool", use_mem_pool, raising=False)
    with gt.gpukit_mem_pool(preset="pytorch", device=0) as pool:
        tag, fake = pool.allocator
        assert tag == "allocator of" and fake.names == ("gk_torch_malloc_raise", "gk_torch_free")
        assert used == [(pool, 0)]
    assert used[-1] == "left"
    assert not gt.is_active()  # scoped: torch.cuda.memory_stats() stays PyTorch's


def test_find_batch_size_and_memory_manager_read_the_pool(torch2, shim):
    alloc = gt.use_gpukit_allocator(preset="pytorch")
    a, k = 30 * MiB, 2 * MiB

    def step(b):
        p = alloc.alloc(a + k * b, 0, None)
        if not p:
            raise gpukit.OutOfMemoryError(-4006, "out of memory", gt.last_oom_report())
        alloc.free(p, 0, 0, None)

    res = gpukit.find_batch_size(step)  # no pool=, no measure=: the shim's figures
    budget = 256 * MiB  # the sim device, nothing reserved before
    assert res.budget == budget
    fitted = [t for t in res.trials if t.fitted]
    assert fitted and all(t.peak >= a + k * t.batch for t in fitted)
    assert a + k * res.batch <= budget
    assert a + k * (res.batch + 2) > budget * (1 - 0.04) - 2 * MiB  # close to the edge
    mm = gpukit.MemoryManager(batch=res.batch)
    fig = mm.figures()
    assert fig.device_total == 256 * MiB
    assert fig.reserved == gt.memory_reserved() and fig.allocated == 0
    mm.step()
    mm.close()


# --- CuPy ----------------------------------------------------------------------------------


def test_cupy_stand_in_allocates_on_the_current_stream(shim, monkeypatch):
    set_to = []

    class PythonFunctionAllocator:
        def __init__(self, malloc, free):
            self._m, self._f = malloc, free

        def malloc(self, size):  # what CuPy does: malloc(size, device_id), free(ptr, device_id)
            ptr = self._m(size, 0)
            return types.SimpleNamespace(ptr=ptr, release=lambda: self._f(ptr, 0))

    current = types.SimpleNamespace(ptr=0)
    cuda = types.SimpleNamespace(
        memory=types.SimpleNamespace(PythonFunctionAllocator=PythonFunctionAllocator),
        set_allocator=set_to.append, get_current_stream=lambda: current)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    monkeypatch.delitem(sys.modules, "gpukit.cupy", raising=False)
    import gpukit.cupy as gc
    alloc = gc.use_gpukit_allocator()
    assert set_to == [alloc.malloc] and _shim.active("cupy")
    s = stream(shim)  # CuPy's current stream
    current.ptr = s
    m = alloc.malloc(6 * MiB)
    m.release()
    # The block is cached for CuPy's stream: that stream takes it again, the default one does not.
    assert shim.gk_torch_malloc(6 * MiB, 0, s) == m.ptr
    other = alloc.malloc(6 * MiB)
    current.ptr = 0
    other2 = alloc.malloc(6 * MiB)
    assert other2.ptr not in (m.ptr, other.ptr)
    with pytest.raises(gpukit.OutOfMemoryError):
        alloc.malloc(512 * MiB)
    for blk in (other, other2):
        blk.release()
    shim.gk_torch_free(m.ptr, 0, 0, None)
    assert gt.memory_stats()["allocated_bytes.all.current"] == 0


def test_real_cupy_shares_the_pool():
    cupy = pytest.importorskip("cupy")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no GPU")
    except Exception as e:  # no driver
        pytest.skip("no GPU: %s" % e)
    _shim.shutdown()
    sys.modules.pop("gpukit.cupy", None)  # a stand-in test may have imported it over a fake
    import gpukit.cupy as gc
    gc.use_gpukit_allocator()
    x = cupy.arange(1 << 20, dtype=cupy.float32)
    assert gt.memory_stats(0)["allocated_bytes.all.current"] >= 4 * MiB
    del x
    cupy.cuda.set_allocator(cupy.get_default_memory_pool().malloc)


def test_the_shims_pools_publish_their_series_under_gpukit_run(tmp_path):
    """In a fresh process (the shim's publisher starts with its first pool): with
    GK_METRICS_SOCKET set, the pool's series arrive labelled pool="torch"."""
    import socket
    import subprocess
    import time
    path = str(tmp_path / "m.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    code = ("from gpukit import _shim; import time; lib = _shim.load(); "
            "lib.gk_torch_test_use_sim(b'sim:capacity=64MiB'); "
            "p = lib.gk_torch_malloc(3 << 20, 0, None); assert p; time.sleep(0.8)")
    env = dict(os.environ, GK_METRICS_SOCKET=path)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    lines, deadline = [], time.time() + 2
    while time.time() < deadline:
        try:
            lines += sock.recv(65536).decode().split("\n")
        except socket.timeout:
            break
    sock.close()
    assert "gpukit_alloc_in_use_bytes:3145728|g|#device:sim,pool:torch" in lines, lines[:10]
