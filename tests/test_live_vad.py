"""VAD gate with the real silero-vad on espeak-ng speech; exact re-chunking."""
import numpy as np
import pytest
import torch

from live.contract.media import AUDIO_RATE
from bench.silero_jit import SileroSpeechProb, load_silero
from live.vad import CHUNK, Rechunker, SileroOnnxProb, VADGate
from tests.media import cached_clip

TOL_S = 0.150  # the tolerance for segment boundaries


@pytest.fixture(scope="module")
def silero():
    return load_silero()


def test_import_restores_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        load_silero()
        assert torch.get_num_threads() == 2
        # and a VAD call leaves the caller's setting alone too
        SileroSpeechProb()(np.zeros(CHUNK, np.float32))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_rechunker_odd_sizes_exact():
    rng = np.random.default_rng(1)
    x = rng.normal(size=20_000).astype(np.float32)
    rc, out, i = Rechunker(CHUNK), [], 0
    for n in [1, 511, 512, 513, 7, 3000, 0, 1023, 1025] * 3:
        out += rc(x[i : i + n])
        i += n
    out += rc(x[i:])
    assert all(c.shape == (CHUNK,) for c in out)
    joined = np.concatenate(out)
    assert len(joined) == len(x) // CHUNK * CHUNK
    np.testing.assert_array_equal(joined, x[: len(joined)])
    tail = rc.flush()
    assert len(tail) == 1 and tail[0].shape == (CHUNK,)
    np.testing.assert_array_equal(tail[0][: len(x) % CHUNK], x[len(joined):])
    assert not tail[0][len(x) % CHUNK :].any() and rc.flush() == []


class CountingProb:
    """Records the chunks the gate feeds its model."""

    def __init__(self):
        self.chunks = []

    def __call__(self, chunk):
        self.chunks.append(chunk.copy())
        return 0.0

    def reset(self):
        pass


def test_gate_feeds_model_exact_512_chunks():
    prob = CountingProb()
    gate = VADGate(prob)
    x = np.arange(5000, dtype=np.float32)
    assert gate.samples_in == 0
    for a, b in [(0, 3), (3, 700), (700, 701), (701, 4999), (4999, 5000)]:
        gate(x[a:b], t=0.0)
        assert gate.samples_in == b  # waiting samples count as fed (the engine reads this)
    assert len(prob.chunks) == 5000 // CHUNK
    np.testing.assert_array_equal(np.concatenate(prob.chunks), x[: 5000 // CHUNK * CHUNK])
    gate.flush()
    assert gate.processed_until == pytest.approx(5000 / 16000) and gate.samples_in == 5000


@pytest.mark.parametrize("chunk", [160, 512, 1000, 4800])
def test_speech_segments_match_truth(chunk):
    g = cached_clip("two_phrases", seconds=6.0,
                    speech=((0.6, "one two three four"), (3.4, "I am very happy today")))
    gate = VADGate()  # the default model: silero's ONNX one
    assert isinstance(gate.prob, SileroOnnxProb)
    a, segs = g["audio"], []
    for i in range(0, len(a), chunk):
        segs += gate(a[i : i + chunk], t=0.0)
    segs += gate.flush()
    assert len(segs) == len(g["speech"]), (segs, g["speech"])
    for s, (t0, t1) in zip(segs, g["speech"]):
        assert abs(s.start - t0) <= TOL_S and abs(s.end - t1) <= TOL_S, (s, (t0, t1))


def test_silence_gives_no_segments_and_offsets_apply(silero):
    gate = VADGate(SileroSpeechProb(silero))
    rng = np.random.default_rng(0)
    assert gate(rng.normal(0, 0.003, 48_000).astype(np.float32), t=10.0) == []
    assert gate.flush() == [] and gate.processed_until == pytest.approx(13.0)


def test_threshold_and_hangover_are_honoured(silero):
    g = cached_clip("two_phrases", seconds=6.0,
                    speech=((0.6, "one two three four"), (3.4, "I am very happy today")))
    merged = VADGate(SileroSpeechProb(silero), hangover_s=3.0)
    segs = merged(g["audio"], t=0.0) + merged.flush()
    assert len(segs) == 1  # a long hangover bridges the 2 s pause
    def speech_s(gate):
        return sum(s.end - s.start for s in gate(g["audio"], t=0.0) + gate.flush())

    normal = speech_s(VADGate(SileroSpeechProb(silero)))
    strict = speech_s(VADGate(SileroSpeechProb(silero), threshold=0.995))
    assert strict < normal - 0.1  # a stricter threshold keeps less of the audio
    with pytest.raises(ValueError, match="threshold"):
        VADGate(threshold=1.5)


def test_speech_ratio_and_segments_between():
    gate = VADGate(CountingProb())
    gate(np.zeros(16000, np.float32), t=0.0)
    from live.vad import Segment

    gate.segments.append(Segment(0.2, 0.6))
    assert gate.segments_between(0.4, 1.0) == [(0.4, 0.6)]
    assert gate.speech_ratio(0.0, 1.0) == pytest.approx(0.4)
    gate.segments.append(Segment(0.0, 0.5))  # overlapping segments never count above 1
    assert gate.speech_ratio(0.2, 0.6) == 1.0 and gate.speech_ratio(0.6, 0.6) == 0.0


def test_onnx_model_gives_the_jit_models_speech_edges(silero):
    """The default ONNX model decides like the JIT one on real espeak-ng speech: the
    same segments, each edge within one 512-sample chunk (32 ms), and per-chunk
    probabilities within 1e-3 (measured: 4e-6)."""
    g = cached_clip("four_phrases", seconds=12.0, speech=(
        (0.6, "one two three four"), (3.4, "I am very happy today"),
        (7.0, "good morning everybody"), (9.5, "see you")))
    jit, onnx = SileroSpeechProb(silero), SileroOnnxProb()
    edges = []
    for prob in (jit, onnx):
        gate = VADGate(prob)
        edges.append([(s.start, s.end) for s in gate(g["audio"], t=0.0) + gate.flush()])
    assert len(edges[0]) == len(edges[1]) == 4, edges
    np.testing.assert_allclose(np.array(edges[1]), np.array(edges[0]), atol=CHUNK / AUDIO_RATE)
    jit.reset(), onnx.reset()
    a = g["audio"][: len(g["audio"]) // CHUNK * CHUNK].reshape(-1, CHUNK)
    pj, po = np.array([[jit(c), onnx(c)] for c in a[:120]]).T
    assert np.abs(pj - po).max() < 1e-3
    assert pj[20:60].max() > 0.9  # the comparison covers speech (0.6 s on)
