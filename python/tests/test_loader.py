"""gpukit.Loader against the C loader: the same bytes and order for the same settings (record
files, token shards, in-memory arrays, a sim device), zero-copy views and their lifetime, exact
resume, epochs, the launcher's rank and world, torch tensors and the device array interface."""
import gc
import json
import random

import numpy as np
import pytest

import gpukit
from conftest import write_shard


def collect(loader, epochs=1):
    """(concatenated bytes, index lines) of `epochs` epochs, in the dumper's format."""
    data, lines = bytearray(), []
    for _ in range(epochs):
        for batch in loader:
            arrays = batch if isinstance(batch, tuple) else (batch,)
            info = loader.batch_info()
            if isinstance(batch, tuple):  # tokens: the slot is inputs then the last target
                data += arrays[0].tobytes() + arrays[1].reshape(-1)[-1:].tobytes()
            else:
                data += batch.tobytes()
            lines.append((info["epoch"], info["index"], info["count"], info["last_in_epoch"]) +
                         tuple(info["indices"]))
    return bytes(data), lines


SETTINGS = [
    dict(batch=32),
    dict(batch=32, workers=0),
    dict(batch=30, workers=2, shuffle=1, seed=7),
    dict(batch=64, workers=2, shuffle=1, seed=1, drop_last=1),
    dict(batch=16, workers=1, shuffle=1, seed=5, rank=2, world=3),
    dict(batch=50, workers=2, shuffle=0, rank=1, world=4, shard_drop_last=1, depth=2),
]


def loader_kwargs(s):
    names = {"batch": None, "workers": "workers", "shuffle": "shuffle", "seed": "seed",
             "drop_last": "drop_last", "rank": "rank", "world": "world", "depth": "depth",
             "shard_drop_last": "shard_drop_last"}
    kw = {names[k]: v for k, v in s.items() if names[k]}
    kw.setdefault("rank", 0)
    kw.setdefault("world", 1)
    return kw


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: ",".join("%s=%s" % kv for kv in s.items()))
def test_records_match_c(records, dump, tmp_path, s):
    path, arr = records
    want, want_idx = dump("records", path, tmp_path / "c.bin", batches=0, **s)
    with gpukit.Loader(path, s["batch"], **loader_kwargs(s)) as ld:
        got, got_idx = collect(ld)
        assert len(got_idx) == len(ld)
    assert got_idx == want_idx
    assert got == want
    # And the values are the records the indices name.
    first = want_idx[0]
    assert np.array_equal(np.frombuffer(want[:first[2] * 60], np.float32).reshape(-1, 3, 5),
                          arr[list(first[4:])])


def test_random_settings_match_c(records, dump, tmp_path):
    """Random combinations of the settings, two epochs each, against the C loader."""
    path, _ = records
    rng = random.Random(11)
    for i in range(6):
        world = rng.choice([1, 1, 2, 3])
        s = dict(batch=rng.choice([1, 7, 32, 100, 999]), workers=rng.choice([0, 1, 2]),
                 shuffle=rng.choice([0, 1]), seed=rng.randrange(1000),
                 drop_last=rng.choice([0, 1]), world=world, rank=rng.randrange(world),
                 shard_drop_last=rng.choice([0, 1]), depth=rng.choice([2, 3, 5]))
        per = -(-1000 // world) if not s["shard_drop_last"] else 1000 // world
        batches = per // s["batch"] if s["drop_last"] else -(-per // s["batch"])
        if batches == 0:
            continue
        want, want_idx = dump("records", path, tmp_path / ("c%d.bin" % i),
                              batches=2 * batches, **s)
        with gpukit.Loader(path, s["batch"], **loader_kwargs(s)) as ld:
            got, got_idx = collect(ld, epochs=2)
        assert got_idx == want_idx, s
        assert got == want, s


def test_memory_matches_c(dump, tmp_path):
    arr = np.random.default_rng(3).integers(0, 1 << 30, size=(777, 6), dtype=np.int64)
    raw = tmp_path / "items.raw"
    raw.write_bytes(arr.tobytes())
    s = dict(batch=64, workers=2, shuffle=1, seed=42)
    want, want_idx = dump("memory", raw, tmp_path / "c.bin", item=48, **s)
    with gpukit.Loader(arr, 64, workers=2, shuffle=True, seed=42, rank=0, world=1) as ld:
        got, got_idx = collect(ld)
        batch = None
        for batch in ld:
            break
        assert batch.dtype == np.int64 and batch.shape == (64, 6)
    assert (got, got_idx) == (want, want_idx)


@pytest.mark.parametrize("rank,world,shuffle", [(0, 1, 0), (1, 2, 0), (0, 3, 1)])
def test_tokens_match_c(dump, tmp_path, rank, world, shuffle):
    rng = np.random.default_rng(rank + 10 * world)
    for k in range(3):
        write_shard(tmp_path / ("shard_%02d.bin" % k), rng.integers(0, 50257, 5000 + 37 * k))
    pattern = str(tmp_path / "shard_*.bin")
    B, T = 4, 64
    want, want_idx = dump("tokens", pattern, tmp_path / "c.bin", batch=B, seq=T, rank=rank,
                          world=world, shuffle=shuffle, seed=3)
    src = gpukit.data.TokenShards(pattern, seq_len=T)
    with gpukit.Loader(src, B, rank=rank, world=world, shuffle=shuffle, seed=3) as ld:
        got, got_idx = collect(ld)
        x, y = next(iter(ld))
        assert x.shape == (B, T) and y.shape == (B, T) and x.dtype == np.uint16
        # targets are the inputs shifted by one token, in the same slot
        assert np.array_equal(x.reshape(-1)[1:], y.reshape(-1)[:-1])
        assert y.ctypes.data == x.ctypes.data + 2
    assert got_idx == want_idx
    assert got == want


def test_sim_device_slots_match_c(records, dump, tmp_path):
    path, _ = records
    spec = "sim:capacity=256MiB,backed=1"
    want, want_idx = dump("records", path, tmp_path / "c.bin", batch=40, workers=2, shuffle=1,
                          seed=9, device=spec)
    with gpukit.Loader(path, 40, workers=2, shuffle=True, seed=9, device=spec, rank=0,
                       world=1) as ld:
        got = bytearray()
        for a in ld:
            assert isinstance(a, gpukit.DeviceArray)
            assert a.shape[1:] == (3, 5) and a.dtype == np.float32
            got += a.to_numpy().tobytes()
            cai = a.array_interface()
            assert cai["data"] == (a.ptr, False) and cai["version"] == 3
            assert cai["typestr"] == "<f4" and cai["shape"] == a.shape
            assert cai["stream"] is None  # gpukit's default stream of a non-cuda device
            assert not hasattr(a, "__cuda_array_interface__")  # sim memory is not CUDA memory
    assert bytes(got) == want


def test_pool_device_slots(records):
    path, arr = records
    pool = gpukit.Pool("sim:capacity=64MiB,backed=1")
    with gpukit.Loader(path, 100, pool=pool, rank=0, world=1) as ld:
        a = next(iter(ld))
        assert ld.device is pool.device
        assert np.array_equal(a.to_numpy(), arr[:100])
        stats = pool.memory_stats()
        assert stats["allocation.all.current"] == ld.depth  # one device slot per ring slot
    with pytest.raises(ValueError, match="pool is on"):
        gpukit.Loader(path, 10, pool=pool, device="sim")
    small = gpukit.Pool("sim:capacity=64MiB,backed=1", limit="1MiB")
    with pytest.raises(gpukit.OutOfMemoryError) as e:
        gpukit.Loader(path, 10000, pool=small)  # 4 slots of 600 KB do not fit 1 MiB
    assert e.value.name == "GK_EDEVOOM"
    assert e.value.report  # the pool's report travels with it


def test_views_are_zero_copy_and_valid_until_next(records):
    path, arr = records
    with gpukit.Loader(path, 10, workers=1, depth=2, rank=0, world=1) as ld:
        it = iter(ld)
        a = next(it)
        kept = a.copy()
        assert np.array_equal(a, arr[:10])
        assert not a.flags.owndata and a.base is not None  # a view, no copy
        b = next(it)
        assert np.array_equal(b, arr[10:20])
        c = next(it)  # the ring has 2 slots: the third batch reuses the first one's slot
        assert c is a  # the same view object, over the same memory
        assert np.array_equal(a, arr[20:30])  # the old view now shows the new batch
        assert np.array_equal(kept, arr[:10])  # .copy() keeps it
        next(it)  # b's slot, released when c was taken, now holds the fourth batch
        assert np.array_equal(b, arr[30:40])


def test_close_keeps_held_memory_valid(records):
    path, arr = records
    ld = gpukit.Loader(path, 10, rank=0, world=1)
    a = next(iter(ld))
    ld.close()
    del ld
    gc.collect()
    assert np.array_equal(a, arr[:10])  # the slot lives as long as its views
    closed = gpukit.Loader(path, 10, rank=0, world=1)
    closed.close()
    closed.close()  # idempotent
    with pytest.raises(gpukit.Error, match="closed"):
        next(iter(closed))
    with pytest.raises(gpukit.Error, match="closed"):
        len(closed)


def test_partial_last_batch_and_len(records):
    path, arr = records
    with gpukit.Loader(path, 300, rank=0, world=1) as ld:
        assert len(ld) == 4
        shapes = [b.shape for b in ld]
        assert shapes == [(300, 3, 5)] * 3 + [(100, 3, 5)]
    with gpukit.Loader(path, 300, drop_last=True, rank=0, world=1) as ld:
        assert len(ld) == 3
        assert [b.shape[0] for b in ld] == [300] * 3


def test_epochs_and_set_epoch(records):
    path, _ = records
    with gpukit.Loader(path, 100, shuffle=True, seed=4, rank=0, world=1) as ld:
        e0 = [ld.batch_info()["indices"] for _ in ld]
        e1 = [ld.batch_info()["indices"] for _ in ld]
        assert ld.batch_info()["epoch"] == 1
        assert e0 != e1  # a new permutation per epoch
        assert sorted(sum(e0, [])) == list(range(1000))
        ld.set_epoch(0)
        assert [ld.batch_info()["indices"] for _ in ld] == e0
        ld.set_epoch(1)
        assert [ld.batch_info()["indices"] for _ in ld] == e1


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_exact(records, workers):
    path, _ = records
    kw = dict(shuffle=True, seed=8, workers=workers, rank=1, world=2)
    with gpukit.Loader(path, 32, **kw) as ld:
        full = [b.copy() for _ in range(3) for b in ld]  # three epochs
    for stop in (0, 1, 7, len(full) // 3 - 1, len(full) // 3, len(full) - 2):
        with gpukit.Loader(path, 32, **kw) as ld:
            it, got = iter(ld), []
            for i in range(stop):
                try:
                    got.append(next(it).copy())
                except StopIteration:
                    it = iter(ld)
                    got.append(next(it).copy())
            state = json.loads(json.dumps(ld.state_dict()))  # plain data
        with gpukit.Loader(path, 32, **kw) as again:
            again.load_state_dict(state)
            while len(got) < len(full):
                got += [b.copy() for b in again]
        assert len(got) == len(full)
        for a, b in zip(got, full):
            assert np.array_equal(a, b), stop


def test_state_mismatch_and_bad_states(records):
    path, _ = records
    with gpukit.Loader(path, 32, shuffle=True, seed=1, rank=0, world=1) as ld:
        next(iter(ld))
        state = ld.state_dict()
    assert state["batch"] == 1 and state["epoch"] == 0
    with gpukit.Loader(path, 32, shuffle=True, seed=2, rank=0, world=1) as other:
        with pytest.raises(gpukit.Error) as e:
            other.load_state_dict(state)
        assert e.value.name == "GK_EMISMATCH"
        assert "saved seed is 1 but this loader has 2" in e.value.message
        with pytest.raises(ValueError, match="not gpukit loader state fields"):
            other.load_state_dict(dict(state, _sampler_iter_yielded=3))
        with pytest.raises(ValueError, match="lacks"):
            other.load_state_dict({"epoch": 0})
        bad = dict(state, seed=2, batch=99)
        with pytest.raises(gpukit.Error, match="past the epoch"):
            other.load_state_dict(bad)


def test_resume_on_another_world_size(records):
    """Two ranks save after 3 batches each; three ranks load those states: together they deliver
    each remaining sample of the epoch exactly once, then the next epoch in their own order."""
    path, _ = records
    seen, states = [], []
    for rank in range(2):
        with gpukit.Loader(path, 32, shuffle=True, seed=3, rank=rank, world=2) as ld:
            it = iter(ld)
            for _ in range(3):
                next(it)
                seen += ld.batch_info()["indices"]
            states.append(ld.state_dict())
    assert states[0]["position"] == states[1]["position"] == 3 * 32 * 2
    rest = []
    for rank in range(3):
        with gpukit.Loader(path, 32, shuffle=True, seed=3, rank=rank, world=3) as ld:
            ld.load_state_dict(json.loads(json.dumps(states[rank % 2])))
            for _ in ld:
                rest += ld.batch_info()["indices"]
            assert ld.batch_info()["epoch"] == 0
            next(iter(ld))
            assert ld.batch_info()["epoch"] == 1 and ld.batch_info()["index"] == 0
    assert len(seen) == 192 and len(set(seen)) == 192
    assert sorted(seen + rest) == list(range(1000))


def test_rank_world_from_the_launcher(records, monkeypatch):
    path, _ = records
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with gpukit.Loader(path, 10) as ld:
        assert (ld.rank, ld.world) == (1, 4)
        assert "rank 1 of 4 from RANK/WORLD_SIZE" in ld.launcher
        assert len(ld) == 25
        assert next(iter(ld)).shape == (10, 3, 5)
        assert ld.batch_info()["indices"][:3] == [1, 5, 9]
    with gpukit.Loader(path, 10, rank=0, world=1) as ld:  # explicit values win
        assert (ld.rank, ld.world) == (0, 1)
    monkeypatch.setenv("WORLD_SIZE", "lots")
    with pytest.raises(gpukit.Error, match="WORLD_SIZE"):
        gpukit.Loader(path, 10)


def test_bad_sources_and_settings(tmp_path, records):
    path, _ = records
    with pytest.raises(gpukit.Error) as e:
        gpukit.Loader(tmp_path / "missing.gkr", 10)
    assert "missing.gkr" in e.value.message and e.value.name == "ENOENT"
    bad = tmp_path / "bad.gkr"
    bad.write_bytes(b"not a record file" * 400)
    with pytest.raises(gpukit.Error) as e:
        gpukit.Loader(bad, 10)
    assert e.value.name == "GK_ECORRUPT" and "bad.gkr" in e.value.message
    with pytest.raises(gpukit.Error, match="depth"):
        gpukit.Loader(path, 10, depth=1)
    with pytest.raises(gpukit.Error, match="rank"):
        gpukit.Loader(path, 10, rank=3, world=2)
    with pytest.raises(ValueError, match="batch_size"):
        gpukit.Loader(path, 0)
    with pytest.raises(TypeError, match="Loader source"):
        gpukit.Loader([1, 2, 3], 1)
    with pytest.raises(ValueError, match="no items"):
        gpukit.Loader(np.zeros((0, 4)), 1)


def test_a_file_truncated_in_use(tmp_path):
    arr = np.arange(4000, dtype=np.uint8).reshape(1000, 4)
    path = tmp_path / "t.gkr"
    gpukit.data.pack(arr, path)
    with gpukit.Loader(path, 100, workers=0, rank=0, world=1) as ld:
        it = iter(ld)
        next(it)
        with open(path, "r+b") as f:
            f.truncate(4096 + 2000)
        with pytest.raises(gpukit.Error) as e:
            for _ in range(20):
                next(it)
        assert e.value.name == "GK_ECORRUPT" and "t.gkr" in e.value.message


def test_as_torch_host_tensors(records):
    torch = pytest.importorskip("torch", reason="python3-torch is installed by scripts/deps.sh")
    path, arr = records
    with gpukit.Loader(path, 50, as_torch=True, rank=0, world=1) as ld:
        t = next(iter(ld))
        assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
        assert tuple(t.shape) == (50, 3, 5)
        assert torch.equal(t, torch.from_numpy(arr[:50]))
        assert t.data_ptr() == ld._cache[ld.batch_info()["slot"]][2].data_ptr()  # no copy


def test_tokens_as_torch(tmp_path):
    torch = pytest.importorskip("torch", reason="python3-torch is installed by scripts/deps.sh")
    write_shard(tmp_path / "s.bin", np.arange(3000), version=2)
    with gpukit.Loader(gpukit.data.TokenShards(tmp_path / "s.bin", 16), 8, as_torch=True,
                       rank=0, world=1) as ld:
        x, y = next(iter(ld))
        assert x.dtype == torch.int64  # PyTorch indexes with int64 (and has no uint32)
        assert tuple(x.shape) == (8, 16)
        assert x[0, 0].item() == 0 and x.reshape(-1)[-1].item() == 8 * 16 - 1
        assert torch.equal(x.reshape(-1)[1:], y.reshape(-1)[:-1])


def test_cuda_array_interface_on_the_fake_driver(records, monkeypatch):
    """The cuda path without a GPU: the fake driver (tests/support/fake_cuda.c) keeps device
    memory in host memory, so the slot's bytes and the interface can be checked."""
    from conftest import need_env
    fake = need_env("GK_TEST_FAKE_CUDA")
    monkeypatch.setenv("GK_CUDA_LIBRARY", fake)
    path, arr = records
    with gpukit.Loader(path, 25, device="cuda:0", rank=0, world=1) as ld:
        a = next(iter(ld))
        cai = a.__cuda_array_interface__
        assert cai == {"shape": (25, 3, 5), "typestr": "<f4", "data": (a.ptr, False),
                       "strides": None, "version": 3, "stream": 1}
        assert np.array_equal(a.to_numpy(), arr[:25])
        assert ld.device.backend == "cuda"


def test_collected_in_any_order(records):
    """A loader, its pool and its device caught in one reference cycle: the collector finalizes
    them in any order, yet the loader is destroyed before the pool and the pool before the
    device (under AddressSanitizer a wrong order is a use after free), and all are closed."""
    path, _ = records
    for order in range(3):
        dev = gpukit.Device("sim:capacity=64MiB,backed=1")
        pool = gpukit.Pool(dev)
        ld = gpukit.Loader(path, 50, pool=pool, rank=0, world=1)
        a = next(iter(ld)).to_numpy()
        res = (dev._res, pool._res)
        objs = [dev, pool, ld]
        cycle = objs[order:] + objs[:order]
        for x, y in zip(cycle, cycle[1:] + cycle[:1]):
            x.next_in_cycle = y
        del dev, pool, ld, objs, cycle, x, y
        gc.collect()
        assert all(r.handle is None for r in res), order  # everything was closed
        assert a.shape == (50, 3, 5)
