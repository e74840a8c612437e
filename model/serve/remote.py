"""The client side of the pool (``model.serve.pool``): ``PoolAnalyser(handle, stream_id)``
is ``live.worker.Analyser`` over a Ray Serve deployment handle; ``PoolServer`` is the
page's model server over a pool. Every remote call has a timeout, so nothing hangs.

Failures raise ``PoolError`` (the engine records it as the window's ``error``): a
replica that died mid-window gets the window sent again once (the router moves the
stream to a live replica); no answer within ``timeout_s``; the pool itself gone
("pool lost: ..."). docs/serving.md has the table.
"""
from __future__ import annotations

import logging
import threading
import uuid

from live.contract.result import Result
from live.contract.cli import one_line

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 120.0  # s one window may take on the pool (queue + batch + generate)
RETRIES = 1  # times a window is sent again when its replica died under it


class PoolError(RuntimeError):
    """A window the pool could not analyse (the message says why, in one line)."""


def _replica_died(err: BaseException) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(err, (ActorDiedError, ActorUnavailableError, RayActorError))


class PoolAnalyser:
    """One stream's analyser on the pool. ``stream_id``: its routing key (a fresh one by
    default). ``retried`` counts windows sent twice (replica lost)."""

    def __init__(self, handle, stream_id: str | None = None, name: str = "pool",
                 timeout_s: float = CALL_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.handle, self.name, self.timeout_s = handle, name, timeout_s
        self.stream_id = stream_id or uuid.uuid4().hex
        self.retried = 0

    def __call__(self, window, on_partial=None) -> Result:
        """``on_partial`` (streaming) is not supported over the pool: the whole result
        comes at once."""
        from ray.exceptions import GetTimeoutError, RayError

        last: BaseException | None = None
        for attempt in range(1 + RETRIES):
            if attempt:
                self.retried += 1
                log.warning("stream %s: replica lost on window %d, retrying once (%s)",
                            self.stream_id, window.index, one_line(last))
            try:
                response = self.handle.options(multiplexed_model_id=self.stream_id).remote(window)
                return response.result(timeout_s=self.timeout_s)
            except (TimeoutError, GetTimeoutError):
                response.cancel()
                raise PoolError(f"pool: no answer within {self.timeout_s:g} s") from None
            except Exception as e:  # noqa: BLE001  (classified below)
                if _replica_died(e):
                    last = e
                    continue
                if isinstance(e, RayError) or type(e).__module__.startswith("ray."):
                    raise PoolError(f"pool lost: {type(e).__name__}: {one_line(e)}") from None
                raise  # the model's own error on the replica: reported as is
        raise PoolError(f"pool lost: the replica died and so did the retry's ({one_line(last)})")


class PoolServer:
    """The app's ``live.page.session.ModelServer`` over a pool: every page session's
    stream (its analyser thread: one per page session) gets its own ``PoolAnalyser``, so
    its windows stay on one replica, and streams run concurrently (no process-wide lock)."""

    def __init__(self, pool) -> None:
        self.pool = pool
        self.name, self.plan, self.weights_mb, self.state = pool.name, pool.cfg.plan, 0.0, "ready"
        self.thread = None  # nothing loads in this process
        self._local = threading.local()

    def start(self, plan: str | None = None) -> None:
        """The page's reload: a pool's model and plan are set when it starts (--plan);
        asking for another plan is a ValueError that says so (the page shows it)."""
        if plan is not None and (None if plan == "none" else plan) != self.plan:
            raise ValueError(f"this page analyses on a pool whose replicas loaded plan {self.plan or 'none'} at "
                             f"start: restart the app with --pool ... --plan {plan} to change it")

    def analyse(self, window, on_partial=None) -> Result:
        a = getattr(self._local, "analyser", None)
        if a is None:
            a = self._local.analyser = self.pool.analyser()
        return a(window)

    def status(self) -> str:
        return f"{self.name}: {self.pool.cfg.replicas} replica(s), batches of up to {self.pool.cfg.max_batch_size}"
