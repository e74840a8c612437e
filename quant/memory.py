"""Peak memory of a block of code: CUDA allocator peak on a GPU, sampled process RSS
on the CPU (the CPU has no allocator counter that can be reset between plans)."""
from __future__ import annotations

import os
import threading

import torch

RSS_SAMPLE_S = 0.005  # s between /proc/self/statm reads
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE_BYTES
    except (OSError, IndexError, ValueError):
        return 0


class PeakMemory:
    """`with PeakMemory(device) as peak: ...` then `peak.bytes` (increase over the
    level at entry) and `peak.kind` ("cuda_max_allocated" or "cpu_rss_sampled")."""

    def __init__(self, device: str = "cpu"):
        self.cuda = torch.device(device).type == "cuda"
        self.kind = "cuda_max_allocated" if self.cuda else "cpu_rss_sampled"
        self.bytes = 0
        self._stop = threading.Event()
        self._thread = None

    def _sample(self):
        while not self._stop.wait(RSS_SAMPLE_S):
            self._peak = max(self._peak, rss_bytes())

    def __enter__(self) -> "PeakMemory":
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = self._peak = rss_bytes()
            self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            self.bytes = max(0, torch.cuda.max_memory_allocated() - self._base)
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, rss_bytes())
            self.bytes = max(0, self._peak - self._base)
