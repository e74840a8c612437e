"""Peak memory of a block of code: CUDA allocator peak on a GPU, sampled process RSS
on the CPU (the CPU has no allocator counter that can be reset between plans); and the
name of the device a measurement ran on."""
from __future__ import annotations

import os
import platform
import threading

import torch

RSS_SAMPLE_S = 0.005  # s between /proc/self/statm reads
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def device_name(device: str) -> str:
    """The card's name on CUDA; on the CPU "CPU: <model name> (<n> cores)" (Linux
    /proc/cpuinfo, else `platform`): the one name results and tables carry."""
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU: {name} ({os.cpu_count()} cores)"


def rss_parts() -> tuple[int, int]:
    """(resident, file-backed resident) bytes of this process (Linux /proc/self/statm:
    "resident" and "shared"; the second counts mapped file pages such as mmap'd
    safetensors shards, so resident − file-backed is the anonymous memory: tensors,
    malloc's heap). (0, 0) where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            fields = f.read().split()
        return int(fields[1]) * PAGE_BYTES, int(fields[2]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0, 0


class PeakMemory:
    """`with PeakMemory(device) as peak: ...` then `peak.bytes` (increase over the
    level at entry) and `peak.kind` ("cuda_max_allocated" or "cpu_rss_sampled"). On
    the CPU also `peak.anon_bytes`: the same for anonymous memory alone (`rss_parts`;
    file pages a load maps are left out)."""

    def __init__(self, device: str = "cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.kind = "cuda_max_allocated" if self.cuda else "cpu_rss_sampled"
        self.bytes = 0
        self.anon_bytes: int | None = None
        self._stop = threading.Event()
        self._thread = None

    def _read(self):
        resident, file_backed = rss_parts()
        self._peak = max(self._peak, resident)
        self._peak_anon = max(self._peak_anon, resident - file_backed)

    def _sample(self):
        while not self._stop.wait(RSS_SAMPLE_S):
            self._read()

    def fold(self) -> None:
        """Keep the CUDA peak so far before someone resets the counter (`WindowPeak`)."""
        if self.cuda:
            self._max_seen = max(self._max_seen, torch.cuda.max_memory_allocated())

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
            self._max_seen = 0
        else:
            resident, file_backed = rss_parts()
            self._base, self._base_anon = resident, resident - file_backed
            self._peak, self._peak_anon = self._base, self._base_anon
            self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.bytes = max(0, max(self._max_seen, torch.cuda.max_memory_allocated()) - self._base)
        else:
            self._stop.set()
            self._thread.join()
            self._read()
            self.bytes = max(0, self._peak - self._base)
            self.anon_bytes = max(0, self._peak_anon - self._base_anon)


class WindowPeak:
    """`with WindowPeak(device) as w: ...` then `w.bytes`: on CUDA the allocator's peak
    over the block above what was allocated at entry (`torch.cuda.max_memory_allocated`,
    reset at entry) — the quantity `quant.window_memory` estimates; None on the CPU,
    which has no allocator counter (`PeakMemory`'s RSS sampling is too coarse for one
    window). `outer`: a `PeakMemory` around this block, whose peak so far is kept
    before the counter is reset."""

    def __init__(self, device: str = "cpu", outer: PeakMemory | None = None):
        self.cuda = torch.device(device).type == "cuda"
        self.outer = outer
        self.bytes: int | None = None

    def __enter__(self) -> "WindowPeak":
        if self.cuda:
            torch.cuda.synchronize()
            if self.outer is not None:
                self.outer.fold()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.bytes = max(0, torch.cuda.max_memory_allocated() - self._base)


def profiled_peak(fn, *args, **kwargs) -> tuple[object, int]:
    """(fn's result, peak bytes of CPU tensor memory allocated while it ran, above the
    level at entry), from `torch.profiler` memory records (every allocation and free of
    the CPU allocator, in time order). Exact for tensors, unlike RSS sampling; slow
    (seconds), so for tests and one-off checks of `quant.window_memory` on the CPU."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn(*args, **kwargs)
    records = sorted(
        (e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
    )
    level = peak = 0
    for _, nbytes in records:
        level += nbytes
        peak = max(peak, level)
    return result, peak
