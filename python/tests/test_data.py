"""gpukit.data: pack() through the C writer (arrays, iterables, element types and shapes), the same
file as `gpukit data pack`, inspect(), and failures that leave nothing half written."""
import os
import subprocess

import numpy as np
import pytest

import gpukit
from conftest import write_shard


@pytest.mark.parametrize("dtype,shape", [("<f4", (3, 5)), ("|u1", (7,)), ("<i8", (2, 2, 2)),
                                         ("<f2", (1,)), (">u4", (4,))])
def test_pack_arrays_round_trip(tmp_path, dtype, shape):
    arr = (np.arange(200 * int(np.prod(shape))) % 251).astype(dtype).reshape((200,) + shape)
    path = tmp_path / "a.gkr"
    info = gpukit.data.pack(arr, path)
    assert info["kind"] == "records"
    assert info["record_count"] == 200 and info["record_size"] == arr[0].nbytes
    assert info["dtype"] == np.dtype(dtype).str and info["shape"] == shape
    assert info["data_offset"] == 4096
    assert os.path.getsize(path) == 4096 + arr.nbytes
    with gpukit.Loader(path, 64, rank=0, world=1) as ld:
        batches = [b.copy() for b in ld]
    assert all(b.dtype == arr.dtype for b in batches)  # byte order included
    assert np.array_equal(np.concatenate(batches), arr)


def test_pack_one_dimensional_array(tmp_path):
    info = gpukit.data.pack(np.arange(10, dtype=np.int32), tmp_path / "v.gkr")
    assert info["shape"] == (1,) and info["record_size"] == 4


def test_pack_matches_the_tool(tmp_path, tool):
    raw = np.random.default_rng(5).integers(0, 256, 64 * 300, dtype=np.uint8)
    (tmp_path / "raw").write_bytes(raw.tobytes())
    subprocess.run([tool, "data", "pack", "--record-size", "64", str(tmp_path / "raw"),
                    str(tmp_path / "tool.gkr")], check=True, capture_output=True)
    gpukit.data.pack(raw.reshape(300, 64), tmp_path / "py.gkr")
    assert (tmp_path / "py.gkr").read_bytes() == (tmp_path / "tool.gkr").read_bytes()
    # and from an iterable of bytes records
    gpukit.data.pack((raw[i * 64:(i + 1) * 64].tobytes() for i in range(300)),
                     tmp_path / "it.gkr")
    assert (tmp_path / "it.gkr").read_bytes() == (tmp_path / "tool.gkr").read_bytes()


def test_pack_iterables(tmp_path):
    recs = [np.full((2, 3), i, dtype=np.float64) for i in range(50)]
    info = gpukit.data.pack(iter(recs), tmp_path / "i.gkr")
    assert info["dtype"] == "<f8" and info["shape"] == (2, 3) and info["record_count"] == 50
    with gpukit.Loader(tmp_path / "i.gkr", 50, rank=0, world=1) as ld:
        assert np.array_equal(next(iter(ld)), np.stack(recs))
    # lists with a dtype and shape given
    info = gpukit.data.pack(([i, i + 1] for i in range(10)), tmp_path / "l.gkr", dtype="<i2",
                            shape=(2,))
    assert info["dtype"] == "<i2" and info["record_size"] == 4
    # bytes with a dtype: the shape follows from the size
    info = gpukit.data.pack([b"\0" * 16] * 3, tmp_path / "b.gkr", dtype="<f4")
    assert info["shape"] == (4,) and info["dtype"] == "<f4"


def test_pack_failures_leave_no_file(tmp_path):
    path = tmp_path / "x.gkr"
    with pytest.raises(ValueError, match="record 2 has 3 bytes, the first has 4"):
        gpukit.data.pack([b"abcd", b"efgh", b"ijk"], path)
    assert os.listdir(tmp_path) == []
    # an existing file is left as it was
    path.write_bytes(b"keep me")
    with pytest.raises(ValueError):
        gpukit.data.pack([b"abcd", b"ef"], path)
    assert path.read_bytes() == b"keep me"
    assert sorted(os.listdir(tmp_path)) == ["x.gkr"]

    def broken():
        yield b"1234"
        raise RuntimeError("the source failed")
    with pytest.raises(RuntimeError, match="the source failed"):
        gpukit.data.pack(broken(), path)
    assert path.read_bytes() == b"keep me" and sorted(os.listdir(tmp_path)) == ["x.gkr"]
    with pytest.raises(ValueError, match="no records"):
        gpukit.data.pack([], tmp_path / "e.gkr")
    with pytest.raises(ValueError, match="has 12 bytes, but the records have 16"):
        gpukit.data.pack([b"\0" * 16], tmp_path / "s.gkr", dtype="<f4", shape=(3,))
    with pytest.raises(gpukit.Error) as e:
        gpukit.data.pack(np.zeros((2, 2)), tmp_path / "no" / "such" / "dir.gkr")
    assert e.value.name == "ENOENT" and "no/such/ does not exist" in e.value.message
    assert not os.path.exists(tmp_path / "s.gkr") and not os.path.exists(tmp_path / "e.gkr")


def test_inspect(tmp_path):
    write_shard(tmp_path / "s.bin", np.arange(100))
    info = gpukit.data.inspect(tmp_path / "s.bin")
    assert info == {"kind": "tokens", "magic": 20240520, "version": 1, "tokens": 100,
                    "token_bytes": 2, "file_size": 1024 + 200}
    (tmp_path / "junk").write_bytes(b"x" * 5000)
    with pytest.raises(gpukit.Error) as e:
        gpukit.data.inspect(tmp_path / "junk")
    assert e.value.name == "GK_ECORRUPT" and "junk" in e.value.message
    with pytest.raises(gpukit.Error) as e:
        gpukit.data.inspect(tmp_path / "missing")
    assert e.value.name == "ENOENT"


def test_token_shard_errors(tmp_path):
    write_shard(tmp_path / "tiny.bin", np.arange(10))
    with pytest.raises(gpukit.Error) as e:
        gpukit.Loader(gpukit.data.TokenShards(tmp_path / "tiny.bin", 64), 4)
    assert "tiny.bin" in e.value.message
    with pytest.raises(gpukit.Error) as e:
        gpukit.Loader(gpukit.data.TokenShards(tmp_path / "none_*.bin", 64), 4)
    assert "none_*.bin" in e.value.message
    with pytest.raises(ValueError, match="seq_len"):
        gpukit.data.TokenShards(tmp_path / "tiny.bin", 0)
