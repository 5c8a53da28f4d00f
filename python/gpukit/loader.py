"""gpukit.Loader: the C prefetching loader, delivering numpy views, torch tensors or device arrays.

The C library does the work: a stateless seeded sampler (rank/world sharding, exact resume),
worker threads filling a ring of pre-allocated (pinned) slots in order, and a device stage that
copies each batch on its own stream. Python gets zero-copy views of the ring's slots.
"""
import ctypes
import errno
import os
from ctypes import byref, c_void_p
from typing import Any, Dict, Iterator, Optional, Union

from . import _structs as S
from ._lib import cstr, lib
from .data import Records, TokenShards
from .device import Device, Pool, _Closeable, as_device
from .errors import Error, check, error_from


def _numpy():
    try:
        import numpy
    except ImportError:
        raise ImportError("gpukit.Loader delivers numpy arrays: install numpy (Debian: "
                          "python3-numpy)") from None
    return numpy


class _SlotMemory:
    """Host memory of one ring slot, exported to numpy; holds the loader's native state alive."""

    __slots__ = ("__array_interface__", "_native")

    def __init__(self, ptr, nbytes, native):
        self.__array_interface__ = {"data": (ptr, False), "shape": (nbytes,), "typestr": "|u1",
                                    "version": 3}
        self._native = native


class _Native:
    """The C objects of one loader and what they borrow. Freed when the Loader and every batch
    view taken from it are gone (the views reference this object), so a view can never point at
    freed memory; Loader.close() stops the loader at once."""

    def __init__(self):
        self.ld = None
        self.ds = None
        self.keep = []      # what the C side borrows: the numpy array of a memory dataset
        self.users = []     # device and pool resources acquired (released after destroy)
        self.streams = {}   # native stream handle -> wrapped gk_stream (c_void_p)
        self.dev_handle = None

    def use(self, resource):
        resource.acquire()
        self.users.append(resource)

    def stop(self):
        if self.ld:
            lib.gk_loader_stop(self.ld)

    def __del__(self):
        try:
            if self.ld:
                lib.gk_loader_destroy(self.ld)
                self.ld = None
            for s in self.streams.values():
                lib.gk_stream_destroy(self.dev_handle, s)
            self.streams = {}
            if self.ds:
                lib.gk_dataset_destroy(self.ds)
                self.ds = None
            users, self.users = self.users, []
            for r in reversed(users):  # the pool before its device
                r.release()
        except Exception:
            pass


class DeviceArray:
    """A batch (or the inputs or targets of one) in a loader's device slot.

    Valid until the loader's next batch, like the host views. On a cuda device it carries
    ``__cuda_array_interface__`` (version 3), so ``torch.as_tensor(a, device="cuda")``, CuPy and
    Numba take it without a copy; :meth:`to_numpy` copies it to the host on any device.

    Attributes: ptr (device address), shape, dtype (numpy), nbytes, device (gpukit.Device).
    """

    __slots__ = ("ptr", "shape", "dtype", "nbytes", "device", "stream", "_native")

    def __init__(self, ptr, shape, dtype, device, stream, native):
        self.ptr, self.shape, self.dtype = ptr, tuple(shape), dtype
        n = dtype.itemsize
        for d in self.shape:
            n *= d
        self.nbytes = n
        self.device, self.stream, self._native = device, stream, native

    def array_interface(self):
        """The CUDA Array Interface (v3) dict of this array. ``stream`` is the stream the
        loader made wait for the batch's copy (1 for the legacy default stream), or None when
        the batch was delivered on gpukit's default stream of a non-cuda device."""
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False),
                "strides": None, "version": 3, "stream": self.stream}

    @property
    def __cuda_array_interface__(self):
        if self.device.backend != "cuda":
            raise AttributeError("a %s device's memory is not CUDA memory (only cuda devices "
                                 "export __cuda_array_interface__)" % self.device.backend)
        return self.array_interface()

    def to_numpy(self):
        """A host copy (numpy array), taken after the batch's copy to the device completed."""
        np = _numpy()
        raw = self.device.copy_to_host(self.ptr, self.nbytes)
        return np.frombuffer(raw, dtype=self.dtype).reshape(self.shape)

    def __repr__(self):
        return "gpukit.DeviceArray(ptr=0x%x, shape=%s, dtype=%s, device=%r)" % (
            self.ptr, self.shape, self.dtype, self.device.spec)


class _Retyped:
    """A DeviceArray exported under another element type of the same size."""

    __slots__ = ("__cuda_array_interface__", "_base")

    def __init__(self, base, typestr):
        cai = dict(base.__cuda_array_interface__)
        cai["typestr"] = typestr
        self.__cuda_array_interface__, self._base = cai, base


class Loader(_Closeable):
    """Batches from a record file, llm.c token shards or an in-memory numpy array.

    Args:
        source: a path or :class:`gpukit.data.Records` (a gpukit record file), a
            :class:`gpukit.data.TokenShards`, or a numpy array (items along the first axis;
            borrowed: do not change it while the loader exists).
        batch_size: items per batch (for token shards: sequences per batch).
        workers: worker threads (0: the batch is read inside the iteration; -1: one per CPU
            this process may use, affinity and cgroup quota counted, but one); default the
            library's (1).
        depth: ring slots (batches prefetched + the one you hold); default 4.
        shuffle, seed: a keyed permutation per epoch, computed from (seed, epoch).
        drop_last: drop an epoch's last partial batch.
        shard_drop_last: drop the tail that does not divide among ranks instead of padding.
        rank, world: this process's share; by default from the launcher's environment
            (torchrun's RANK/WORLD_SIZE, Slurm, Open MPI), else 0 of 1 (see ``launcher``).
        device: None (host only), a :class:`gpukit.Device` or a device spec ("cuda:0",
            "sim:capacity=1GiB,backed=1", "host"); batches are copied into device slots on the
            loader's copy stream.
        pool: a :class:`gpukit.Pool` on `device` for the device slots.
        as_torch: deliver torch tensors (``torch.from_numpy`` on the host; on a cuda device a
            CUDA tensor over the device slot, ordered after the copy on torch's current stream;
            on host and sim devices, which torch cannot address, the host slot's tensors).
        timeout: seconds an iteration waits for a batch before raising (default 300).
        name: the loader's name in metrics (``loader:<name>`` under ``gpukit run``).

    Iterating gives one epoch, from the current position to the epoch's end; the next iteration
    continues with the next epoch (``set_epoch`` jumps). What each batch is:

    * host: a numpy array ``(count, *item_shape)`` that is a **view of the ring slot**: it is
      valid until the next batch is taken (then the slot is refilled). Use ``.copy()`` to keep
      one. Token shards give ``(inputs, targets)``, two ``(batch_size, seq_len)`` views.
    * ``as_torch=True``: the same as torch tensors (host views; on cuda device tensors).
    * a device without ``as_torch``: :class:`DeviceArray` objects over the device slot.

    The delivered order depends only on (seed, epoch, rank, world, batch size, flags), never on
    the number of workers. ``state_dict()`` / ``load_state_dict()`` save and restore the position
    exactly (a batch you received counts as consumed). Under ``gpukit run`` the loader publishes
    its wait, batches and items itself. One thread drives a loader.
    """

    def __init__(self, source: Union[str, os.PathLike, Records, TokenShards, Any],
                 batch_size: int, *, workers: Optional[int] = None, depth: Optional[int] = None,
                 shuffle: bool = False, seed: int = 0, drop_last: bool = False,
                 shard_drop_last: bool = False, rank: Optional[int] = None,
                 world: Optional[int] = None, device: Union[None, str, Device] = None,
                 pool: Optional[Pool] = None, as_torch: bool = False,
                 timeout: Optional[float] = None, name: Optional[str] = None):
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            raise ValueError("Loader batch_size must be at least 1, not %r" % (batch_size,))
        batch_size = int(batch_size)
        self._native = n = _Native()
        cfg = S.new(S.gk_loader_config)
        lib.gk_loader_config_default(byref(cfg), ctypes.sizeof(cfg))
        found = ctypes.create_string_buffer(256)
        check(lib.gk_loader_config_from_env(byref(cfg), found, len(found)))
        #: What the launcher's environment said about rank and world (one line).
        self.launcher = found.value.decode()
        if rank is not None:
            cfg.rank = int(rank)
        if world is not None:
            cfg.world = int(world)
        for field, value in (("workers", workers), ("depth", depth), ("timeout", timeout)):
            if value is not None:
                setattr(cfg, field, value)
        cfg.seed, cfg.shuffle = int(seed), int(bool(shuffle))
        cfg.drop_last, cfg.shard_drop_last = int(bool(drop_last)), int(bool(shard_drop_last))
        cfg.epochs = 0  # iteration ends each epoch itself
        if name is not None:
            self._name = cstr(name, "loader name")
            cfg.name = self._name

        # The device, its pool.
        self.device, self._owns_device = None, False
        if pool is not None:
            if not isinstance(pool, Pool):
                raise TypeError("Loader pool must be a gpukit.Pool, not %s" % type(pool).__name__)
            if device is None:
                device = pool.device
            elif device is not pool.device:
                raise ValueError("Loader: the pool is on %r; give device=pool.device (or no "
                                 "device)" % pool.device.spec)
        if device is not None:
            self.device, owned = as_device(str(device) if not isinstance(device, (Device, str))
                                           else device)
            cfg.device = self.device.handle
            n.dev_handle = self.device.handle
            n.use(self.device._res)
            self._owns_device = owned
        self._pool = pool
        if pool is not None:
            cfg.pool = pool.handle
            n.use(pool._res)

        # The dataset, and how one batch is laid out.
        np = _numpy()
        self._tokens = isinstance(source, TokenShards)
        if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__"):
            source = Records(source)
        if isinstance(source, Records):
            n.ds = source._open()
            info = source.info()
            self._dtype, self._item_shape = _record_layout(np, info)
            self.source = source
        elif self._tokens:
            n.ds = source._open(batch_size, cfg.world)
            tb = lib.gk_dataset_token_bytes(n.ds)
            self._dtype = np.dtype("<u2" if tb == 2 else "<u4")
            self._item_shape = (batch_size, source.seq_len)
            self.source = source
        elif isinstance(source, np.ndarray):
            arr = np.ascontiguousarray(source)
            if arr.ndim == 0 or arr.shape[0] == 0 or arr.nbytes == 0:
                raise ValueError("Loader: the array has no items (shape %s)" % (arr.shape,))
            ds = c_void_p()
            check(lib.gk_dataset_memory(arr.ctypes.data, arr.nbytes // arr.shape[0],
                                        arr.shape[0], byref(ds)))
            n.ds = ds
            n.keep.append(arr)
            self._dtype, self._item_shape = arr.dtype, arr.shape[1:]
            self.source = arr
        else:
            raise TypeError("Loader source must be a path, gpukit.data.Records, "
                            "gpukit.data.TokenShards or a numpy array, not %s"
                            % type(source).__name__)
        cfg.batch_size = 1 if self._tokens else batch_size
        self.batch_size = batch_size

        ld = c_void_p()
        rc = lib.gk_loader_create(byref(cfg), n.ds, byref(ld))
        if rc:
            raise error_from(rc, pool._res.handle if pool is not None else None)
        n.ld = self._ld = ld
        self.rank, self.world, self.depth = cfg.rank, cfg.world, cfg.depth
        self._cfg = cfg

        # Delivery: the hot path touches only these.
        self._as_torch = bool(as_torch)
        self._cuda = self.device is not None and self.device.backend == "cuda"
        if self._as_torch:
            import torch
            self._torch = torch
            if self._cuda:
                self._torch_device = torch.device("cuda", self.device.index)
        self._b = S.new(S.gk_batch)
        self._bref = byref(self._b)
        self._bsize = ctypes.sizeof(self._b)
        self._next = lib.gk_loader_next
        self._timeout = -1.0
        self._cache = {}
        self._full = 1 if self._tokens else batch_size
        self._post = None
        if self._tokens and self._as_torch:
            self._post = self._token_tensors

    # --- delivery -------------------------------------------------------------------------------

    def _stream(self):
        """The gk_stream to deliver on: torch's current stream for CUDA tensors, else the
        device's default stream (None)."""
        if not (self._cuda and self._as_torch):
            return None
        native = self._torch.cuda.current_stream(self._torch_device).cuda_stream
        if not native:
            return None  # the legacy default stream, which is gpukit's NULL stream too
        n = self._native
        s = n.streams.get(native)
        if s is None:
            s = c_void_p()
            check(lib.gk_stream_wrap(n.dev_handle, native, byref(s)))
            n.streams[native] = s
        return s

    def _deliver(self):
        """The next batch (what iteration yields) and whether it ends its epoch. The hot path:
        one C call, a few field reads, a dictionary lookup."""
        stream = self._stream() if self._cuda else None
        rc = self._next(self._ld, stream, self._timeout, self._bref, self._bsize)
        if rc:
            self._raise(rc)
        b = self._b
        slot = b.slot
        entry = self._cache.get(slot)
        if entry is None or entry[0] != b.host or entry[1] is not stream:
            entry = self._cache[slot] = (b.host, stream, self._make(b, stream))
        out = entry[2]
        if b.count != self._full:
            out = out[:b.count]
        elif self._post is not None:
            out = self._post(out)
        return out, b.last_in_epoch

    def _raise(self, rc):
        if self._native is None:
            lib.last_error()
            raise Error(-errno.EBADF, "gpukit.Loader: the loader is closed")
        raise error_from(rc, self._pool._res.handle if self._pool is not None else None)

    def _make(self, b, stream):
        """The objects delivered for a slot (built once per slot, then reused)."""
        np = _numpy()
        n = self._native
        full = self._full * b.item_size
        if self.device is not None and (not self._as_torch or self._cuda):
            if stream is not None:
                native = next(k for k, v in n.streams.items() if v is stream)
            else:
                native = 1 if self._cuda else None  # CAI v3: 1 is the legacy default stream
            arrays = self._split(lambda off, shape: DeviceArray(
                b.device + off, shape, self._dtype, self.device, native, n))
            if self._as_torch:
                torch = self._torch
                if self._tokens:  # the same bits as signed integers, widened per batch
                    signed = self._dtype.str.replace("u", "i")
                    arrays = tuple(torch.as_tensor(_Retyped(a, signed), device=self._torch_device)
                                   for a in arrays)
                else:
                    arrays = torch.as_tensor(arrays, device=self._torch_device)
            return arrays
        host = np.asarray(_SlotMemory(b.host, full, n))
        arrays = self._split(lambda off, shape: host[off:off + _nbytes(shape, self._dtype)]
                             .view(self._dtype).reshape(shape))
        if self._as_torch and not self._tokens:
            torch = self._torch
            arrays = tuple(map(torch.from_numpy, arrays)) if self._tokens else \
                torch.from_numpy(arrays)
        return arrays

    def _token_tensors(self, pair):
        """Token views as int64 tensors (a copy: PyTorch has no unsigned 16- or 32-bit type to
        index with). On the host through numpy; on a cuda device by widening on the device."""
        torch = self._torch
        if self._cuda:
            mask = (1 << (8 * self._dtype.itemsize)) - 1
            return tuple(t.to(torch.int64).bitwise_and_(mask) for t in pair)
        return tuple(torch.from_numpy(a.astype("int64")) for a in pair)

    def _split(self, make):
        """One array (records, memory) or (inputs, targets) (token windows) for a slot."""
        if self._tokens:
            B, T = self._item_shape
            step = self._dtype.itemsize
            return make(0, (B, T)), make(step, (B, T))
        return make(0, (self._full,) + tuple(self._item_shape))

    def __iter__(self) -> Iterator[Any]:
        """Yields the batches from the current position to the end of its epoch."""
        deliver = self._deliver
        while True:
            out, last = deliver()
            yield out
            if last:
                return

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        return lib.gk_loader_batches_per_epoch(self._live().ld)

    # --- position -------------------------------------------------------------------------------

    def _live(self):
        if self._native is None:
            raise Error(-errno.EBADF, "gpukit.Loader: the loader is closed")
        return self._native

    def batch_info(self) -> Dict[str, Any]:
        """The last batch delivered: seq, epoch, index (within the epoch), count,
        last_in_epoch, slot, device (the device slot's address, None without a device) and
        indices (the dataset indices, a list)."""
        b = self._b
        d = S.as_dict(b, skip=("size", "host", "indices", "item_size", "bytes"))
        d["indices"] = [b.indices[i] for i in range(b.count)] if b.indices else []
        return d

    def set_epoch(self, epoch: int) -> None:
        """Continues at the start of `epoch` (as DistributedSampler.set_epoch does, but the
        loader also moves on to the next epoch by itself). Views of held batches become
        invalid."""
        check(lib.gk_loader_set_epoch(self._live().ld, int(epoch)))

    def state_dict(self) -> Dict[str, int]:
        """The position as a plain dict (JSON- and pickle-friendly): every field of
        gk_loader_state. Taken after a batch was received, it resumes with the batch after it."""
        st = S.new(S.gk_loader_state)
        check(lib.gk_loader_get_state_delivered(self._live().ld, byref(st), ctypes.sizeof(st)))
        return S.as_dict(st)

    def load_state_dict(self, state: Dict[str, int]) -> None:
        """Continues at a position saved by :meth:`state_dict`. A state saved with other
        settings (items, batch size, seed, shuffle or drop_last) is refused with gpukit.Error
        naming the field. A state saved under another world size continues its epoch from the
        global position (the samples all ranks consumed): the remaining ones are dealt to the new
        ranks, each exactly once; later epochs follow the new world's order (docs/loader.md,
        "Resume on another number of GPUs"). Every rank loads a state saved at the same step."""
        if not isinstance(state, dict):
            raise TypeError("load_state_dict takes the dict state_dict() returned, not %s"
                            % type(state).__name__)
        names = [f for f, _ in S.gk_loader_state._fields_ if f != "size"]
        unknown = sorted(set(state) - set(names))
        if unknown:
            raise ValueError("load_state_dict: %s are not gpukit loader state fields (expected "
                             "%s)" % (", ".join(unknown), ", ".join(names)))
        st = S.new(S.gk_loader_state)
        size = ctypes.sizeof(ctypes.c_size_t)
        for f in names:  # the fields present form the struct's size (older states are shorter)
            if f not in state:
                break
            setattr(st, f, int(state[f]))
            desc = getattr(S.gk_loader_state, f)
            size = desc.offset + desc.size
        missing = [f for f in names[:3] if f not in state]
        if missing:
            raise ValueError("load_state_dict: the state lacks %s" % ", ".join(missing))
        st.size = size
        check(lib.gk_loader_restore(self._live().ld, byref(st)))

    # --- figures and lifetime ----------------------------------------------------------------

    def stats(self) -> Dict[str, Any]:
        """gk_loader_stats as a dict: items, bytes, batches, wait_ns, fill_ns, copy_ns,
        worker_busy_ns, ring_ready, depth, first_batch_ns, ... (times in nanoseconds)."""
        st = S.new(S.gk_loader_stats)
        check(lib.gk_loader_get_stats(self._live().ld, byref(st), ctypes.sizeof(st)))
        return S.as_dict(st)

    def close(self):
        """Stops the workers and the copies. The memory of the last batch stays valid until its
        views are gone; the loader delivers nothing more. Idempotent."""
        n, self._native, self._ld = self._native, None, None
        if n is not None:
            n.stop()
        self._cache = {}
        if getattr(self, "_owns_device", False):
            self.device.close()  # for real once the last batch's views are gone
            self._owns_device = False

    def __repr__(self):
        return "gpukit.Loader(%r, batch_size=%d, rank=%d, world=%d%s)" % (
            self.source if not hasattr(self.source, "shape") else "array%s" % (
                self.source.shape,), self.batch_size, self.rank, self.world,
            ", device=%r" % self.device.spec if self.device else "")


def _nbytes(shape, dtype):
    n = dtype.itemsize
    for d in shape:
        n *= d
    return n


def _record_layout(np, info):
    """(dtype, shape of one record) from a record file's header; raw bytes when the header's
    element type and shape do not describe the record size."""
    try:
        dt = np.dtype(info["dtype"])
        if _nbytes(info["shape"], dt) == info["record_size"]:
            return dt, tuple(info["shape"])
    except TypeError:
        pass
    return np.dtype("|u1"), (info["record_size"],)
