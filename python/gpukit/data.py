"""Datasets on disk: gpukit record files (written by :func:`pack`, read by :class:`Records`) and
llm.c token shards (:class:`TokenShards`), and :func:`inspect` for their headers.

A record file holds fixed-size records with a numpy-style element type and shape in its header;
its format is described in gpukit/loader.h. The C writer does the writing; this module turns
numpy arrays or an iterable of records into its calls.
"""
import ctypes
import os
from ctypes import byref, c_uint64, c_void_p
from typing import Any, Dict, Optional, Sequence, Union

from . import _structs as S
from ._lib import cstr, lib
from .errors import Error, check

_CHUNK = 8 << 20  # bytes handed to the C writer per call


class Records:
    """A gpukit record file as a :class:`gpukit.Loader` source.

    Args:
        path: the file.
        access: "mmap" (default) or "pread" (cold or very large files).
        random: shuffled reads (default: the library's, on): the kernel's read-around stays on;
            off asks for sequential read-ahead. The loader passes this through unchanged.
        readahead: honour the loader's read-ahead hints for records of 4 KiB or more (default
            on).
    """

    def __init__(self, path, access="mmap", random=None, readahead=None):
        self.path = os.fspath(path)
        if access not in ("mmap", "pread"):
            raise ValueError('Records access must be "mmap" or "pread", not %r' % (access,))
        self.access, self.random, self.readahead = access, random, readahead

    def info(self):
        """The header as a dict (see :func:`inspect`)."""
        return inspect(self.path)

    def _open(self):
        opt = S.new(S.gk_records_options)
        lib.gk_records_options_default(byref(opt), ctypes.sizeof(opt))
        opt.access = 1 if self.access == "pread" else 0
        if self.random is not None:
            opt.random = int(bool(self.random))
        if self.readahead is not None:
            opt.readahead = int(bool(self.readahead))
        ds = c_void_p()
        check(lib.gk_dataset_open_records(cstr(self.path, "record file"), byref(opt), byref(ds)))
        return ds

    def __repr__(self):
        return "gpukit.data.Records(%r)" % self.path


class TokenShards:
    """llm.c token shards (``glob(pattern)``, sorted by name) as a :class:`gpukit.Loader` source.

    Each batch is one window of ``batch_size * seq_len + 1`` contiguous tokens, delivered as
    ``(inputs, targets)``, two (batch_size, seq_len) views of the same slot shifted by one token,
    as llm.c's dataloader gives them. `group` is the number of ranks the windows of a shard are
    laid out for (default: the loader's world size, which gives each rank exactly the windows
    llm.c's dataloader gives it when shuffle is off).
    """

    def __init__(self, pattern, seq_len, group=None):
        self.pattern = os.fspath(pattern)
        if int(seq_len) < 1:
            raise ValueError("TokenShards seq_len must be at least 1, not %r" % (seq_len,))
        self.seq_len = int(seq_len)
        self.group = group

    def _open(self, batch_size, world):
        ds = c_void_p()
        group = world if self.group is None else int(self.group)
        check(lib.gk_dataset_open_tokens(cstr(self.pattern, "shard pattern"), batch_size,
                                         self.seq_len, group, byref(ds)))
        return ds

    def __repr__(self):
        return "gpukit.data.TokenShards(%r, seq_len=%d)" % (self.pattern, self.seq_len)


def inspect(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The header of a record file or an llm.c token shard as a dict.

    Record files give ``kind="records"``, version, record_size, record_count, data_offset,
    file_size, dtype (numpy style, "<f4") and shape (of one record); shards give
    ``kind="tokens"``, magic, version, tokens, token_bytes and file_size. Raises gpukit.Error
    naming the file and the problem when it is neither (or is damaged).
    """
    p = cstr(path, "path")
    info = S.new(S.gk_records_info)
    rc = lib.gk_records_inspect(p, byref(info), None, 0, ctypes.sizeof(info))
    if rc == 0:
        d = S.as_dict(info)
        d["dtype"] = d["dtype"].decode()
        d["shape"] = tuple(d["shape"][:info.ndim])
        del d["ndim"]
        return dict(kind="records", **d)
    message = lib.last_error()
    tok = S.new(S.gk_tokens_info)
    if lib.gk_tokens_inspect(p, byref(tok), None, 0, ctypes.sizeof(tok)) == 0:
        return dict(kind="tokens", **S.as_dict(tok))
    raise Error(rc, message)


def _np():
    try:
        import numpy
    except ImportError:
        return None
    return numpy


def pack(data: Any, path: Union[str, os.PathLike], dtype: Any = None,
         shape: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """Writes `data` to the record file `path` through the library's writer and returns the
    header of the file written (as :func:`inspect` gives it).

    `data` is a numpy array (one record per row: ``data[i]``; a 1-D array gives records of shape
    (1,)) or an iterable of records, each a numpy array or a bytes-like object of the same size.
    `dtype` (numpy style, "<f4", or a numpy dtype) and `shape` (of one record) describe the
    records; they default to the array's, or to raw bytes ("|u1", (record_size,)). The file is
    written under a temporary name beside `path` and renamed when complete, so a failure (a bad
    record, a full disk) leaves no partial file and an existing file at `path` untouched.
    """
    np = _np()
    path = os.fspath(path)
    if np is not None and isinstance(data, np.ndarray):
        arr = np.ascontiguousarray(data)
        if arr.ndim == 0 or arr.shape[0] == 0:
            raise ValueError("pack: the array has no records (shape %s)" % (arr.shape,))
        if dtype is not None and np.dtype(dtype) != arr.dtype:
            arr = arr.astype(dtype)
        rec_shape = arr.shape[1:] or (1,)
        if shape is not None and tuple(shape) != tuple(rec_shape):
            arr = arr.reshape((arr.shape[0],) + tuple(shape))
            rec_shape = tuple(shape)
        chunks = _array_chunks(arr)
        return _write(path, arr.dtype.str, rec_shape, arr.dtype.itemsize, chunks)
    it = iter(data)
    try:
        first = next(it)
    except StopIteration:
        raise ValueError("pack: the iterable has no records") from None
    if np is not None and not isinstance(first, (bytes, bytearray, memoryview)):
        first = np.asarray(first, dtype=dtype)
        if dtype is None:
            dtype = first.dtype
        rec_shape = tuple(shape) if shape is not None else (first.shape or (1,))
        dt = np.dtype(dtype)
        conv = lambda r: np.ascontiguousarray(np.asarray(r, dtype=dt).reshape(rec_shape))
        records = _chain(first, it, conv)
        return _write(path, dt.str, rec_shape, dt.itemsize, _iter_chunks(records))
    size = memoryview(first).nbytes
    if dtype is None:
        dt_str, itemsize = "|u1", 1
    elif np is not None:
        dt_str, itemsize = np.dtype(dtype).str, np.dtype(dtype).itemsize
    else:
        dt_str, itemsize = str(dtype), None
    rec_shape = tuple(shape) if shape is not None else ((size // itemsize,) if itemsize else
                                                         (size,))
    records = _chain(first, it, lambda r: r)
    return _write(path, dt_str, rec_shape, itemsize, _iter_chunks(records))


def _chain(first, rest, conv):
    yield conv(first)
    for r in rest:
        yield conv(r)


def _array_chunks(arr):
    """(pointer, count, keepalive) pieces of a contiguous array of records."""
    per = max(1, _CHUNK // max(1, arr[0].nbytes))
    for i in range(0, arr.shape[0], per):
        piece = arr[i:i + per]
        yield piece.ctypes.data, piece.shape[0], piece.nbytes // piece.shape[0], piece


def _iter_chunks(records):
    """(pointer, count, record size, keepalive) pieces of an iterable of records (bytes-like)."""
    buf, count, size = bytearray(), 0, None
    for i, r in enumerate(records):
        m = memoryview(r).cast("B")
        if size is None:
            size = m.nbytes
        elif m.nbytes != size:
            raise ValueError("pack: record %d has %d bytes, the first has %d (every record must "
                             "have the same size)" % (i, m.nbytes, size))
        buf += m
        count += 1
        if len(buf) >= _CHUNK:
            yield _buf_chunk(buf, count, size)
            buf, count = bytearray(), 0
    if count:
        yield _buf_chunk(buf, count, size)


def _buf_chunk(buf, count, size):
    cbuf = (ctypes.c_char * len(buf)).from_buffer(buf)
    return ctypes.addressof(cbuf), count, size, (buf, cbuf)


def _write(path, dtype, rec_shape, itemsize, chunks):
    rec_shape = tuple(int(d) for d in rec_shape)
    tmp = "%s.partial-%d" % (path, os.getpid())
    w = c_void_p()
    opened, record_size = False, None
    try:
        for ptr, count, size, _keep in chunks:
            if not opened:
                record_size = size
                n = 1
                for d in rec_shape:
                    n *= d
                if itemsize and n * itemsize != size:
                    raise ValueError("pack: a record of shape %s and type %s has %d bytes, but "
                                     "the records have %d" % (rec_shape, dtype, n * itemsize,
                                                              size))
                shp = (c_uint64 * len(rec_shape))(*rec_shape)
                check(lib.gk_records_writer_open(cstr(tmp, "path"), size, cstr(dtype, "dtype"),
                                                 len(rec_shape), shp, byref(w)))
                opened = True
            elif size != record_size:
                raise ValueError("pack: records of %d bytes after records of %d" % (size,
                                                                                  record_size))
            check(lib.gk_records_writer_write(w, ptr, count))
        if not opened:
            raise ValueError("pack: no records to write")
        rc = lib.gk_records_writer_close(w)
        opened = False
        if rc:
            err = Error(rc, lib.last_error())
            _unlink(tmp)
            raise err
        os.replace(tmp, path)
    except BaseException:
        if opened:
            lib.gk_records_writer_abort(w)
        _unlink(tmp)
        raise
    return inspect(path)


def _unlink(path):
    try:
        os.unlink(path)
    except OSError:
        pass
