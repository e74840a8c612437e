"""Many live streams on a pool of replicas: the analyser as a Ray Serve deployment
(docs/serving.md has the design, the failure table and the commands).

* ``AnalyserReplica``: one replica = one model loaded by ``model.serve.loader``; windows
  of many streams go into one ``generate`` call (``@serve.batch``), each result equal
  to the window analysed alone.
* Stream affinity: a window carries its stream id as Ray Serve's multiplexed model id,
  so it goes to the replica holding its ``model.serve.streams.StreamState``
  (``MAX_STREAMS_PER_REPLICA``, ``STREAM_IDLE_S``: docs/serving.md).
* ``PoolAnalyser`` (``model.serve.remote``): ``live.worker.Analyser`` over the handle.

``start_pool("local:N" | "HOST:PORT", PoolConfig(...))`` starts N replicas here or
deploys onto a running Ray cluster, and returns a ``Pool``.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path

from live.contract.result import Result
from live.contract.cli import CliError, one_line
from model.serve.generate import ANALYSIS_MAX_NEW_TOKENS

log = logging.getLogger(__name__)

APP_NAME = "omni-emotion"  # the Ray Serve application (one per cluster)
DEPLOYMENT = "AnalyserReplica"
MAX_BATCH_SIZE = 4  # windows per generate call
BATCH_WAIT_S = 0.05  # s a replica waits for more windows to fill a batch
MAX_STREAMS_PER_REPLICA = 32  # streams whose state a replica keeps (least recent evicted): <= ~0.9 GB of caches at 7B
STREAM_IDLE_S = 30.0  # s without a window after which a stream's frame cache is emptied
MAX_ONGOING_PER_REPLICA = 16  # requests a replica accepts at once (queued for its batches)
CONNECT_TIMEOUT_S = 5.0  # s to reach a cluster's address before it counts as down
CONSTRUCTOR_RETRIES = 1  # a replica whose model does not load is not retried forever
REPO = Path(__file__).resolve().parents[2]  # replicas import live/ and model/ from here


@dataclass
class PoolConfig:
    """What each replica loads and how the deployment scales.

    model: a checkpoint folder (read on the replica's machine) or "tiny" (random).
    plan: precision plan (quant/), None for the checkpoint as saved.
    loader: "module:function" that applies ``plan`` (the composition root names
        "quant:load_model"; model/ never imports quant/), resolved on the replica.
    device: "auto" (the replica's GPU if it has one), "cpu", "cuda".
    replicas: fixed replica count (ignored when ``autoscaling`` is given).
    num_gpus / num_cpus: resources per replica; num_gpus None: 1 when the cluster has
        GPUs, else 0 (then num_cpus is the replica's share of the CPU).
    max_batch_size, batch_wait_s: ``@serve.batch`` settings.
    autoscaling: Ray Serve ``autoscaling_config`` (min_replicas, max_replicas,
        target_ongoing_requests, ...), passed as is.
    """

    model: str = "tiny"
    plan: str | None = None
    loader: str | None = None
    device: str = "auto"
    max_new_tokens: int = ANALYSIS_MAX_NEW_TOKENS
    replicas: int = 1
    num_gpus: float | None = None
    num_cpus: float = 1.0
    max_batch_size: int = MAX_BATCH_SIZE
    batch_wait_s: float = BATCH_WAIT_S
    autoscaling: dict | None = field(default=None)

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise CliError(f"a pool needs at least one replica, got {self.replicas}")
        if self.max_batch_size < 1 or self.batch_wait_s < 0:
            raise CliError(f"batch size must be >= 1 and wait >= 0 s, got {self.max_batch_size}, "
                           f"{self.batch_wait_s}")
        if (self.num_gpus or 0) < 0 or self.num_cpus < 0:
            raise CliError("num_gpus and num_cpus must be >= 0")


def replica_analyser(cfg: PoolConfig):
    """The replica's model, through the one loader (`model.serve.loader`)."""
    import torch

    from live.contract.cli import resolve_device
    from model.serve.loader import load_analyser

    device = resolve_device(cfg.device)
    if device == "cpu" and cfg.num_cpus >= 1:
        torch.set_num_threads(int(cfg.num_cpus))  # replicas on one box share its cores
    return load_analyser(cfg.model, cfg.plan, device, cfg.loader, cfg.max_new_tokens)


def _replica_class():
    """The deployment class (built on first use: importing this module needs no Ray)."""
    from ray import serve

    class AnalyserReplica:
        """One model; ``__call__(window) -> Result`` with the stream id as the
        multiplexed model id. Adds ``replica`` (this replica's id) to each result."""

        def __init__(self, cfg: dict) -> None:
            self.cfg = PoolConfig(**cfg)
            self.analyser = replica_analyser(self.cfg)
            self.analyse_windows.set_max_batch_size(self.cfg.max_batch_size)
            self.analyse_windows.set_batch_wait_timeout_s(self.cfg.batch_wait_s)
            self.replica = serve.get_replica_context().replica_id.unique_id
            self.batches: list[int] = []  # sizes of the batches run (tests, the bench)
            # the streams Ray Serve's multiplexing still holds (it owns them: LRU-bounded)
            self.streams: weakref.WeakValueDictionary = weakref.WeakValueDictionary()

        @serve.multiplexed(max_num_models_per_replica=MAX_STREAMS_PER_REPLICA)
        async def stream(self, stream_id: str):
            """A stream's state on this replica (``model.serve.streams.StreamState``: its
            frame cache and label memory), kept while the stream's windows come here."""
            state = self.streams[stream_id] = self.analyser.new_stream(stream_id)
            return state

        def _drop_idle(self) -> None:
            """Empty the frame caches of streams without a window for STREAM_IDLE_S."""
            now = time.monotonic()
            for state in list(self.streams.values()):
                if now - state.used_at > STREAM_IDLE_S and len(state.cache):
                    state.cache.reset()

        async def __call__(self, window) -> Result:
            sid = serve.get_multiplexed_model_id()
            self._drop_idle()
            # no stream id: a stream of its own (nothing to reuse)
            state = await self.stream(sid) if sid else self.analyser.new_stream()
            state.used_at = time.monotonic()  # queued for a batch: not idle
            result = await self.analyse_windows((window, state))
            return {**result, "replica": self.replica}

        @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
        async def analyse_windows(self, requests: list) -> list[Result]:
            """(window, its stream) pairs → one result each, in one generate call."""
            windows = [w for w, _ in requests]
            self.batches.append(len(windows))
            # off the event loop: health checks and new requests are answered meanwhile
            return await asyncio.to_thread(
                self.analyser.analyse_batch, windows, frame_ids=[self.analyser.frame_ids(w) for w in windows],
                at=[w.end for w in windows], streams=[s for _, s in requests])

        def stats(self) -> dict:
            """This replica's batch sizes; with a stream id (multiplexed), that stream's
            counters (``StreamState.stats``: windows, frames and crops encoded) if it is here."""
            sid = serve.get_multiplexed_model_id()
            state = self.streams.get(sid) if sid else None
            return {"replica": self.replica, "batches": list(self.batches),
                    "stream": dict(state.stats) if state is not None else None}

    return AnalyserReplica


def build_app(cfg: PoolConfig):
    """The Ray Serve application for ``cfg``."""
    from ray import serve

    options = {"ray_actor_options": {"num_cpus": cfg.num_cpus, "num_gpus": cfg.num_gpus},
               "max_ongoing_requests": max(MAX_ONGOING_PER_REPLICA, 2 * cfg.max_batch_size),
               "max_constructor_retry_count": CONSTRUCTOR_RETRIES,
               "health_check_period_s": 2.0, "health_check_timeout_s": 30.0}
    if cfg.autoscaling:
        options["autoscaling_config"] = dict(cfg.autoscaling)
        options["num_replicas"] = "auto"
    else:
        options["num_replicas"] = cfg.replicas
    deployment = serve.deployment(name=DEPLOYMENT, **options)(_replica_class())
    return deployment.bind(asdict(cfg))


def parse_spec(spec: str) -> tuple[str, int | None]:
    """``local:N`` → ("local", N); ``HOST:PORT`` or ``ray://HOST:PORT`` → (spec, None).
    CliError for anything else."""
    if spec.startswith("local:"):
        n = spec.partition(":")[2]
        if not n.isdigit() or int(n) < 1:
            raise CliError(f"--pool {spec}: local:N needs a replica count N >= 1")
        return "local", int(n)
    host, sep, port = spec.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise CliError(f"--pool {spec}: expected local:N or HOST:PORT of a Ray cluster "
                       "(`ray start --head` prints it)")
    return spec, None


def check_reachable(spec: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """CliError when nothing listens at the cluster address (a down pool fails at once
    instead of Ray retrying for a minute)."""
    host, _, port = spec.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise CliError(f"--pool {spec}: no Ray cluster answers there ({one_line(e)}); "
                       "start one with `ray start --head` on the GPU machine") from None


class Pool:
    """A running deployment: ``analyser(stream_id)`` gives a stream its analyser;
    ``close()`` shuts down what ``start_pool`` started (a local pool) or leaves the
    cluster (an address)."""

    def __init__(self, handle, spec: str, cfg: PoolConfig) -> None:
        self.handle, self.spec, self.cfg = handle, spec, cfg
        self.name = f"pool {spec} ({cfg.model}{', ' + cfg.plan if cfg.plan else ''})"

    def analyser(self, stream_id: str | None = None, timeout_s: float | None = None):
        from model.serve.remote import PoolAnalyser

        return PoolAnalyser(self.handle, stream_id=stream_id, name=self.name,
                            **({} if timeout_s is None else {"timeout_s": timeout_s}))

    def server(self):
        """The app's ``ModelServer`` over this pool (``model.serve.remote.PoolServer``)."""
        from model.serve.remote import PoolServer

        return PoolServer(self)

    def close(self) -> None:
        """Stop a local pool (the whole local Ray instance, Serve's actors with it), or
        leave a joined cluster as it is. ``serve.shutdown()`` is not called first: it
        kills Serve's controller while this process's router still polls it, and the
        raylet prints that failed task on stdout, after a CLI's JSON line."""
        import ray

        ray.shutdown()


def start_pool(spec: str, cfg: PoolConfig | None = None, ray_options: dict | None = None) -> Pool:
    """Start (``local:N``) or join (``HOST:PORT``) a pool and deploy ``cfg`` on it.

    ``ray_options``: extra ``ray.init`` arguments (tests: num_cpus). Raises CliError
    when the cluster is down or lacks the resources the replicas ask for; RuntimeError
    when the replicas fail to start (their model does not load)."""
    cfg = cfg or PoolConfig()
    target, n = parse_spec(spec)
    if n is not None:
        cfg.replicas = n
    if target != "local":
        check_reachable(target)
    import ray
    from ray import serve

    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}}
    # Ray's and Serve's INFO lines are not the CLI's one-line style: warnings and errors only
    init = {"include_dashboard": False, "runtime_env": env, "log_to_driver": False,
            "ignore_reinit_error": True, "logging_level": logging.WARNING, **(ray_options or {})}
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    try:
        if target == "local":
            ray.init(**init)
        else:
            ray.init(address=target, **init)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise CliError(f"--pool {spec}: cannot join the Ray cluster ({one_line(e)})") from None
    try:
        if cfg.num_gpus is None:
            cfg.num_gpus = 1.0 if ray.cluster_resources().get("GPU", 0) >= 1 else 0.0
        _check_resources(cfg, spec)
        serve.start(proxy_location="Disabled")
        handle = serve.run(build_app(cfg), name=APP_NAME, route_prefix=None)
    except BaseException:
        if target == "local":
            serve.shutdown()
        ray.shutdown()
        raise
    return Pool(handle, spec, cfg)


def _check_resources(cfg: PoolConfig, spec: str) -> None:
    """CliError when the cluster cannot place the replicas (they would wait forever)."""
    import ray

    have = ray.cluster_resources()
    count = (cfg.autoscaling or {}).get("min_replicas", cfg.replicas) if cfg.autoscaling else cfg.replicas
    for what, per in (("GPU", cfg.num_gpus), ("CPU", cfg.num_cpus)):
        if per * count > have.get(what, 0) + 1e-9:
            raise CliError(f"--pool {spec}: {count} replica(s) x {per:g} {what} need "
                           f"{per * count:g} {what}s, the cluster has {have.get(what, 0):g}")
