"""Sources and the command line: clear errors, mic callback path, CLI contract."""
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from live.contract.media import AUDIO_RATE
from live.devices import MicSource, WebcamSource, open_source
from live.sources import FileSource, SourceError, decode_audio, iter_video_frames, video_times
from tests.media import AUDIO_RATE as MEDIA_RATE, cached_clip, speak, write_wav

ROOT = Path(__file__).resolve().parents[1]


class Collect:
    def __init__(self):
        self.frames, self.chunks = [], []

    def video(self, f):
        self.frames.append(f)

    def audio(self, c):
        self.chunks.append(c)


def test_file_source_48k_audio_resampled_on_one_clock():
    g = cached_clip("talk48", audio_rate=48_000, seconds=3.0, speech=((0.5, "hello there"),))
    src, sink = FileSource(g["path"]), Collect()
    src.open()
    src.run(sink, threading.Event())
    src.close()
    assert len(sink.frames) == 90 and sink.frames[0].t == 0.0
    assert sink.frames[-1].t == pytest.approx(89 / 30, abs=1e-6)
    n = sum(len(c.samples) for c in sink.chunks)
    assert n == pytest.approx(3.0 * AUDIO_RATE, abs=1100)
    # chunks are contiguous on the sample clock
    for a, b in zip(sink.chunks, sink.chunks[1:]):
        assert b.t == pytest.approx(a.t + len(a.samples) / AUDIO_RATE, abs=1e-6)
    audio = np.concatenate([c.samples for c in sink.chunks])[: len(g["audio"])]
    assert np.corrcoef(np.abs(audio), np.abs(g["audio"][: len(audio)]))[0, 1] > 0.9
    # the offline readers use the same clock and the same audio decoder
    times = [f.t for f in sink.frames]
    np.testing.assert_allclose(video_times(g["path"]), times, atol=1e-9)
    assert [f.t for f in iter_video_frames(g["path"])] == times
    np.testing.assert_array_equal(decode_audio(g["path"]), np.concatenate([c.samples for c in sink.chunks]))


def test_missing_file_and_no_video_stream_errors(tmp_path):
    with pytest.raises(SourceError, match="not found: .*nope.mp4"):
        FileSource(tmp_path / "nope.mp4").open()
    wav = write_wav(np.zeros(1600), 16000, tmp_path / "voice.wav")
    with pytest.raises(SourceError, match="no video stream in .*voice.wav"):
        FileSource(wav).open()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match="junk.mp4"):
        FileSource(junk).open()


def test_missing_webcam_names_device():
    with pytest.raises(SourceError, match=r"webcam 7 \(/dev/video7\)"):
        WebcamSource(7).open()
    assert isinstance(open_source("webcam:3"), WebcamSource)
    assert isinstance(open_source("mic"), MicSource)


def test_source_spec_options_reach_the_devices():
    cam = open_source("webcam:2?size=1280x720&fps=15")
    assert cam.index == "2" and cam.options == {"video_size": "1280x720", "framerate": "15"}
    assert open_source("webcam").options == {}
    mic = open_source("mic:3?rate=44100&channels=2")
    assert (mic.device, mic.rate, mic.channels) == (3, 44100, 2)
    assert (open_source("mic").rate, open_source("mic").channels) == (None, 1)
    for bad, needle in [("webcam:0?size=big", "WIDTHxHEIGHT"), ("webcam?fps=0", "positive"),
                        ("mic?rate=fast", "positive"), ("mic?volume=3", "unknown option")]:
        with pytest.raises(ValueError, match=needle):
            open_source(bad)


class FakeStream:
    """Stands in for sounddevice.InputStream: the test drives the callback."""

    def __init__(self, **kw):
        self.kw, self.started, self.closed = kw, False, False

    def start(self):
        self.started = True

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


def test_mic_callback_path_resamples_48k_stereo():
    made = []
    mic = MicSource(rate=48_000, channels=2, stream_factory=lambda **kw: made.append(FakeStream(**kw)) or made[-1])
    mic.open()
    stream = made[0]
    assert stream.kw["samplerate"] == 48_000 and stream.kw["channels"] == 2
    sink, stop = Collect(), threading.Event()
    th = threading.Thread(target=mic.run, args=(sink, stop))
    th.start()
    while not stream.started:
        pass
    tone = np.sin(2 * np.pi * 440 * np.arange(48_000) / 48_000).astype(np.float32) * 0.5
    block = np.stack([tone, tone], axis=1)
    for i in range(0, 48_000, 1024):  # the PortAudio thread's calls
        stream.kw["callback"](block[i : i + 1024], len(block[i : i + 1024]), None, None)
    stop.set()
    th.join(2)
    mic.close()
    assert stream.closed and not stream.started
    out = np.concatenate([c.samples for c in sink.chunks])
    assert len(out) == pytest.approx(16_000, abs=200)
    spec = np.abs(np.fft.rfft(out[1000:15000]))
    peak_hz = spec.argmax() * AUDIO_RATE / len(out[1000:15000])
    assert abs(peak_hz - 440) < 3
    assert all(b.t >= a.t for a, b in zip(sink.chunks, sink.chunks[1:]))


def test_missing_microphone_is_clear():
    with pytest.raises(SourceError, match="microphone"):
        MicSource(device="no-such-microphone-xyz").open()


def test_speak_and_write_helpers(tmp_path):
    x = speak("hello", tmp_path / "h.wav")
    assert x.dtype == np.float32 and 0.2 < len(x) / MEDIA_RATE < 2.0 and np.abs(x).max() > 0.1


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "live.run", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)


def test_cli_writes_logs_and_stats(tmp_path):
    g = cached_clip("talk")
    r = run_cli(g["path"], "--out", tmp_path, "--analyser", "fake", "--fake-delay", "0.05")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(stats) == {"media_seconds", "cpu_seconds", "cpu_s_per_media_s", "frames",
                          "windows", "dropped_windows", "analyser_errors"}
    assert stats["frames"] == 180 and stats["windows"] == 3
    frames = [json.loads(l) for l in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert len(frames) == 180 and all(len(f["faces"]) == 1 for f in frames)
    assert set(frames[0]["faces"][0]) == {"track", "box", "score"}
    speech = [json.loads(l) for l in (tmp_path / "speech.jsonl").read_text().splitlines()]
    assert len(speech) == 1 and abs(speech[0]["start"] - g["speech"][0][0]) < 0.15
    wins = [json.loads(l) for l in (tmp_path / "windows.jsonl").read_text().splitlines()]
    assert len(wins) == 3
    for w in wins:
        assert {"start", "end", "frame_times", "face_track", "speech_ratio", "analysed", "label"} <= set(w)
        assert len(w["frame_times"]) == 8
    assert sum(w["analysed"] for w in wins) + stats["dropped_windows"] == 3


@pytest.mark.parametrize("source,needle", [("missing.mp4", "not found"), ("webcam:7", "webcam 7"),
                                           ("VOICE", "no video stream")])
def test_cli_errors_are_one_line(tmp_path, source, needle):
    if source == "VOICE":
        source = write_wav(np.zeros(1600), 16000, tmp_path / "voice.wav")
    r = run_cli(source, "--out", tmp_path / "o")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr


def test_cli_model_flag_needs_model(tmp_path):
    r = run_cli(cached_clip("talk")["path"], "--out", tmp_path, "--plan", "nf4")
    assert r.returncode == 2 and "--plan needs --model" in r.stderr


def test_cli_ctrl_c_stops_cleanly(tmp_path):
    import signal
    import time

    g = cached_clip("talk")
    p = subprocess.Popen([sys.executable, "-m", "live.run", g["path"], "--out", str(tmp_path),
                          "--realtime"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    frames = tmp_path / "frames.jsonl"
    while time.time() < deadline and (not frames.exists() or frames.stat().st_size < 2000):
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    assert "Traceback" not in err
    stats = json.loads(out.strip().splitlines()[-1])
    assert 0 < stats["frames"] < 180 and stats["media_seconds"] < 5.5
