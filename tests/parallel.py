"""Independent subprocesses run two at a time: a command line spends most of its
seconds importing on one core, so two of them finish in about the time of one on the
CI's two cores. Only for calls whose outcome does not depend on their order."""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
WORKERS = 2  # the CI machine's cores


def two_at_a_time(fn: Callable[..., T], calls: dict[str, tuple]) -> dict[str, T]:
    """``{name: fn(*args)}`` for each ``name: args`` of ``calls``; an exception in any
    call is raised here."""
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        futures = {name: pool.submit(fn, *args) for name, args in calls.items()}
        return {name: f.result() for name, f in futures.items()}
