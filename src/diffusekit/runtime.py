"""Devices, processes and seeds, written once: the device to run on, torchrun's process group, the data shard of this
process, per-sample seeds, and the batch loop every task runs its work through."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .errors import DiffusekitError, check

DEVICES = ("auto", "cpu", "cuda")


def pick_device(name="auto") -> torch.device:
    """"auto" (CUDA when there is one), "cpu", "cuda", or a torch.device; under torchrun the rank's local GPU."""
    if isinstance(name, torch.device):
        return name
    check(name in DEVICES, f"device must be one of {', '.join(DEVICES)}, got {name!r}", "device")
    if name == "cuda" and not torch.cuda.is_available():
        raise DiffusekitError("device cuda, but no CUDA device is available", "device")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def native_bf16(device: torch.device) -> bool:
    """Whether the device multiplies bf16 matrices in hardware (a GPU that supports it; an x86 CPU with AMX or
    AVX-512 BF16), where autocast to bf16 pays; elsewhere it is emulated and can be slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


@functools.cache
def cpu_flags() -> frozenset:
    """The CPU's feature flags as Linux names them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def init_distributed(device: torch.device) -> tuple[int, int]:
    """(rank, world size) from torchrun's environment when present (the process group started once: nccl for CUDA,
    gloo for the CPU); (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank() if world > 1 else 0), world


def leave_process_group():
    """Under torchrun: wait for every rank, then tear the group down. A rank that exits with gloo's threads still up
    while another is finishing aborts (SIGABRT) now and then, failing a command whose work was done."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def seed_device(device: torch.device, seed: int):
    # torch.manual_seed also queues seeds for every accelerator backend, formatting a stack trace each time
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def sample_seeds(seed: int, n: int, start: int = 0, stream: int = 0) -> list[int]:
    """Per-sample seeds: sample i of seed s is the same whatever the batch size or n. Mixed by SeedSequence because
    torch's CPU generator keeps only 32 bits of a seed (so seed << 32 + i would collide). A nonzero `stream` gives draws
    independent of sampling's (likelihood probes must not reuse a sample's own noise)."""
    key = (lambda i: [seed, i]) if stream == 0 else (lambda i: [seed, i, stream])
    return [int(np.random.SeedSequence(key(i)).generate_state(1)[0]) for i in range(start, start + n)]


def shard(n: int) -> tuple[list[int], int, int]:
    """This process's indices of n samples under torchrun (every world-th), and (rank, world)."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank, world = 0, 1
    return list(range(rank, n, world)), rank, world


def gather(values: dict | None, indices, n: int, world: int) -> dict:
    """Per-sample values {name: [len(indices), ...]} of every rank, back in sample order (on every rank). values None:
    this rank has no samples."""
    if world > 1:  # tensors through all_gather: pickled ones (all_gather_object) grow the heap call after call
        specs = [None] * world
        dist.all_gather_object(specs, (len(indices), values and {k: (tuple(v.shape[1:]), v.dtype)
                                                                 for k, v in values.items()}))
        counts = [c for c, _ in specs]
        spec = next(s for _, s in specs if s is not None)
        idx = _all_gather_rows(torch.as_tensor(indices, dtype=torch.long), counts)
        vals = {k: _all_gather_rows(values[k].cpu() if values else torch.empty((0, *shape), dtype=dtype), counts)
                for k, (shape, dtype) in spec.items()}
        parts = [(idx[r], {k: v[r] for k, v in vals.items()}) for r in range(world) if counts[r]]
    else:
        parts = [(indices, values)]
    first = parts[0][1]
    out = {k: torch.empty((n, *v.shape[1:]), dtype=v.dtype) for k, v in first.items()}
    for idx, vals in parts:
        for k, v in vals.items():
            out[k][torch.as_tensor(idx, dtype=torch.long)] = v.cpu()
    return out


def _all_gather_rows(t: torch.Tensor, counts: list[int]) -> list[torch.Tensor]:
    """Every rank's t (counts[rank] rows, the same trailing shape and dtype on every rank), sent as bytes padded to
    the longest (any dtype goes through gloo)."""
    row = torch.empty((), dtype=t.dtype).element_size() * math.prod(t.shape[1:])
    buf = torch.zeros(max(1, max(counts) * row), dtype=torch.uint8)
    buf[:len(t) * row] = t.contiguous().reshape(-1).view(torch.uint8)
    bufs = [torch.empty_like(buf) for _ in counts]
    dist.all_gather(bufs, buf)
    return [b[:c * row].view(t.dtype).reshape(c, *t.shape[1:]) for b, c in zip(bufs, counts)]


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
STREAM_MMAP_THRESHOLD = 256 * 1024  # glibc's starting value is 128 KiB; a chunk's tensors are far above either


def steady_heap():
    """Before a long stream: a block of 256 KiB or more that the heap has no free room for gets its own mapping
    (returned whole when freed) instead of growing the heap. glibc otherwise raises this threshold to the largest
    mapped block it has freed (up to 32 MiB), and a chunk's tensors are then carved out of the heap among small
    long-lived objects: each chunk's peak creeps up with the chunks before it. It changes the whole process's malloc
    for good (a fixed threshold also stops the raising); only where the C library is glibc (elsewhere nothing)."""
    mallopt = _libc("mallopt")
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, STREAM_MMAP_THRESHOLD)


def release_memory():
    """Hand the heap's free pages back to the system (glibc's malloc_trim; elsewhere nothing): a long stream then stays
    at one chunk's resident memory instead of creeping up through fragmentation."""
    trim = _libc("malloc_trim")
    if trim is not None:
        trim(0)


@functools.cache
def _libc(name: str):
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c")), name, None)
    except OSError:
        return None


def on_main(fn):
    """fn() run by rank 0 alone under torchrun (it may write files), its result or its DiffusekitError handed to every
    rank: each returns the same value or raises the same error, so none is left waiting in a collective."""
    if not (dist.is_available() and dist.is_initialized()):
        return fn()
    box = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except DiffusekitError as e:
            box[0] = ("error", (str(e), e.params))
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise DiffusekitError(value[0], *value[1])
    return value


def map_batches(fn, n: int, batch_size: int, *, seed: int = 0, stream: int = 0, indices=None, desc="working",
                progress=False, start: int = 0):
    """fn(idx [B] LongTensor, seeds [B]) over consecutive batches of range(n) (or of `indices`), its outputs joined
    along dim 0 on the CPU (a tensor, or a tuple or dict of tensors). Sample i's seed is sample_seeds(seed, ., start +
    i, stream): the same whatever the batch size, so every result is too; start: the index of sample 0 in a longer
    stream processed in parts."""
    check(isinstance(batch_size, int) and batch_size >= 1, f"batch_size must be at least 1, got {batch_size}",
          "batch_size")
    idx_all = torch.arange(n) if indices is None else torch.as_tensor(indices, dtype=torch.long)
    seeds_all = sample_seeds(seed, n, start, stream=stream)
    parts = []
    for start in tqdm(range(0, len(idx_all), batch_size), disable=not progress, desc=desc, unit="batch"):
        idx = idx_all[start:start + batch_size]
        parts.append(fn(idx, [seeds_all[i] for i in idx.tolist()]))
    return _join(parts)


def _join(parts):
    if not parts:
        return None
    first = parts[0]
    if isinstance(first, dict):
        return {k: _join([p[k] for p in parts]) for k in first}
    if isinstance(first, tuple):
        return tuple(_join(list(c)) for c in zip(*parts))
    if first is None:
        return None
    return torch.cat([p.detach().cpu() for p in parts])
