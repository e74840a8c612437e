"""The analyser pool (model.serve.pool / model.serve.remote): a local Ray instance,
started once for this module, with two replicas of the tiny model."""
from __future__ import annotations

import socket
import threading

import pytest

from live.worker import AnalyserWorker
from tests.media import cached_clip

JOIN_S = 240.0  # s a test's streams may take before the test fails as hung
STREAMS = 4
WINDOW_S = 2.0  # s per window: short clips give several windows


def _strip(result: dict) -> dict:
    """A result without what legitimately differs between runs (time, replica)."""
    return {k: v for k, v in result.items() if k not in ("seconds", "replica")}


@pytest.fixture(scope="module")
def windows():
    """Windows of two real clips (a face and speech; a face only), as the engine cuts them."""
    from live.detector import MediaPipeFaceDetector
    from live.engine import Engine, EngineConfig
    from live.faces import FaceTracker
    from live.devices import open_source

    out = []
    for clip in (cached_clip("study", seconds=4.0), cached_clip("silent", seconds=3.0, audio=False)):
        got = []
        Engine(open_source(clip["path"]), lambda w: got.append(w) or {},
               EngineConfig(window_s=WINDOW_S, every_window=True),
               tracker=FaceTracker(MediaPipeFaceDetector())).run()
        out.append(got)
    assert all(len(ws) >= 2 for ws in out) and any(w.face_present.any() for w in out[0])
    return out


@pytest.fixture(scope="module")
def local(tiny_checkpoint):
    """The single-process reference: the same checkpoint, analysed in this process."""
    from model.serve.loader import load_analyser

    return load_analyser(tiny_checkpoint, device="cpu", max_new_tokens=12)


@pytest.fixture(scope="module")
def pool(tiny_checkpoint):
    from model.serve.pool import PoolConfig, start_pool

    cfg = PoolConfig(model=str(tiny_checkpoint), device="cpu", max_new_tokens=12, num_cpus=0.5,
                     max_batch_size=4, batch_wait_s=0.2)
    p = start_pool("local:2", cfg, ray_options={"num_cpus": 2})
    yield p
    p.close()


def _run_streams(analysers, window_lists):
    """Each stream on its own thread, windows in order; returns (results, errors) per
    stream, a window's result None where it raised. Fails (not hangs) when a stream
    does not finish."""
    results = [[] for _ in analysers]
    errors = [[] for _ in analysers]

    def stream(i):
        for w in window_lists[i]:
            try:
                results[i].append(analysers[i](w))
            except Exception as e:  # recorded, asserted on the main thread
                results[i].append(None)
                errors[i].append(e)

    threads = [threading.Thread(target=stream, args=(i,), daemon=True) for i in range(len(analysers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_S)
    assert not any(t.is_alive() for t in threads), "a stream hung"
    return results, errors


def test_a_batch_gives_each_window_its_alone_result(windows, local):
    clips = [w for ws in windows for w in ws][:4]
    batched = local.analyse_batch(clips)
    alone = [local.analyse(c) for c in clips]
    assert [_strip(r) for r in batched] == [_strip(r) for r in alone]
    # the batch really was padded: the prompts differ in length (audio vs none)
    assert len({r["tokens"]["audio"] for r in alone}) == 2


def test_four_streams_give_the_single_process_results_each_on_one_replica(pool, windows, local):
    lists = [windows[i % 2] for i in range(STREAMS)]
    expected = [[_strip(local(w)) for w in ws] for ws in lists]
    analysers = [pool.analyser(f"s{i}") for i in range(STREAMS)]
    results, errors = _run_streams(analysers, lists)
    assert errors == [[] for _ in range(STREAMS)]
    assert [[_strip(r) for r in rs] for rs in results] == expected
    assert all(r["label"] == e["label"] for rs, es in zip(results, expected) for r, e in zip(rs, es))
    # stream affinity: one replica per stream while it lives
    assert all(len({r["replica"] for r in rs}) == 1 for rs in results)


def test_each_stream_reuses_its_own_frames_inside_the_pools_batches(pool, windows, tiny_checkpoint):
    """Two streams batched together on the pool: each window's frames go through its own
    stream's cache on the replica, so each stream encodes what the single-process
    analyser (reuse on) encodes, and its overlapping windows only their new frames."""
    from model.serve.loader import load_analyser

    ws = windows[0]
    ref = load_analyser(tiny_checkpoint, device="cpu", max_new_tokens=12)
    expected = [_strip(ref(w)) for w in ws]
    t = ref.model.config.num_frames
    assert ref.stats["windows"] == len(ws) and ref.stats["vision_frames_encoded"] < t * len(ws)  # windows overlap
    analysers = [pool.analyser(f"reuse{i}") for i in range(2)]
    results, errors = _run_streams(analysers, [ws, ws])
    assert errors == [[], []]
    assert [[_strip(r) for r in rs] for rs in results] == [expected, expected]
    for a in analysers:
        stats = pool.handle.options(method_name="stats", multiplexed_model_id=a.stream_id).remote().result(timeout_s=JOIN_S)
        assert stats["replica"] == results[analysers.index(a)][-1]["replica"]
        assert stats["stream"] == ref.stats


def test_the_engine_worker_runs_on_the_pool(pool, windows):
    """The engine's own worker (newest wins) with a pool analyser: every window submitted
    after the previous one finished is analysed; a window displaced while one is in
    flight is dropped and counted, never sent."""
    done = []
    worker = AnalyserWorker(pool.analyser("engine"), lambda w, r, e, info: done.append((w.index, r, e)))
    worker.start()
    ws = windows[0]
    worker.submit(ws[0])
    assert worker.wait_idle(JOIN_S)
    for w in ws[1:]:
        worker.submit(w)
    assert worker.wait_idle(JOIN_S)
    worker.stop()
    assert all(e is None and "replica" in r for _, r, e in done)
    assert worker.analysed + worker.dropped == len(ws) and worker.errors == 0
    assert done[0][0] == 0 and done[-1][0] == ws[-1].index  # the newest window always runs


def test_the_pages_reload_cannot_change_a_pools_plan(pool):
    """The page's "Reload model with this plan" on a pooled app: the same plan is a
    no-op, another is a ValueError naming how to change it (the page shows it)."""
    server = pool.server()
    server.start(plan=pool.cfg.plan or "none")
    with pytest.raises(ValueError, match="restart the app with --pool .* --plan nf4"):
        server.start(plan="nf4")


def test_a_killed_replica_loses_no_stream_and_hangs_nothing(pool, windows, local):
    import ray

    lists = [windows[0] * 3 for _ in range(2)]
    analysers = [pool.analyser(f"k{i}") for i in range(2)]
    first = [a(lists[i][0]) for i, a in enumerate(analysers)]  # each stream has its replica
    victim = first[0]["replica"]
    name = next(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                if a["name"].startswith("SERVE_REPLICA") and victim in a["name"])
    killer = threading.Timer(0.5, lambda: ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True))
    killer.start()
    results, errors = _run_streams(analysers, [ws[1:] for ws in lists])
    killer.join()
    # every window has its answer or a one-line pool error; the stream went on after it
    expected = {w.index: _strip(local(w)) for w in windows[0]}
    for i in range(2):
        assert len(results[i]) == len(lists[i]) - 1 and results[i][-1] is not None
        assert all(type(e).__name__ == "PoolError" and "\n" not in str(e) for e in errors[i])
        assert len(errors[i]) <= 1  # at most one window lost (it was retried once)
        assert all(r is None or _strip(r) == expected[w.index] for w, r in zip(lists[i][1:], results[i]))
    # the killed replica's stream moved to a live one
    assert victim not in {r["replica"] for r in results[0][-2:]}
    # and the pool serves a new stream
    assert _strip(pool.analyser("after")(windows[1][0])) == _strip(local(windows[1][0]))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("spec, says", [
    ("127.0.0.1:{port}", "no Ray cluster answers there"),
    ("local:0", "local:N needs a replica count N >= 1"),
    ("gpu-box", "expected local:N or HOST:PORT"),
])
def test_a_pool_that_cannot_start_is_a_one_line_usage_error(tiny_checkpoint, tmp_path, capsys, spec, says):
    from live import run

    clip = cached_clip("silent", seconds=3.0, audio=False)
    rc = run.main([clip["path"], "--out", str(tmp_path / "o"), "--model", str(tiny_checkpoint),
                   "--pool", spec.format(port=_free_port()), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: --pool ") and says in err


def test_the_pool_lost_mid_stream_is_the_windows_error(pool, windows):
    """Last in the module: it takes the deployment down."""
    from ray import serve

    from model.serve.remote import PoolError

    a = pool.analyser("lost", timeout_s=20.0)
    assert "replica" in a(windows[1][0])
    serve.delete("omni-emotion")
    with pytest.raises(PoolError) as e:
        a(windows[1][1])
    assert str(e.value).startswith("pool") and "\n" not in str(e.value)
