"""Device sources: a webcam (through ``av``'s platform capture formats) and a
microphone (through ``sounddevice``/PortAudio), both stamped on arrival on the session
``Clock``. ``open_source`` (here: above ``live.sources``, which it also builds from)
turns ``webcam[:N]`` / ``mic[:DEVICE]`` / a file path into a source.
"""
from __future__ import annotations

import platform
import threading
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl

import numpy as np

from live.frames import AudioChunk, VideoFrame
from live.resample import Resampler
from live.sources import Clock, FileSource, Sink, Source, SourceError

MIC_BLOCK = 1024  # frames per microphone callback (~21 ms at 48 kHz)
MIC_RATE = 48_000  # Hz asked of the microphone when it has no preferred rate


def _webcam_spec(index: str) -> tuple[str, str]:
    """(av format, device string) for webcam ``index`` on this platform."""
    system = platform.system()
    if system == "Linux":
        dev = index if index.startswith("/dev/") else f"/dev/video{index}"
        return "v4l2", dev
    if system == "Darwin":
        return "avfoundation", f"{index}:none"
    if system == "Windows":
        return "dshow", index if index.startswith("video=") else f"video={index}"
    raise SourceError(f"webcam capture is not supported on {system}")


class WebcamSource:
    """A camera through ``av``'s device input (v4l2 / avfoundation / dshow).

    ``index``: ``"0"`` → /dev/video0 on Linux, device 0 on macOS; on Windows a
    DirectShow device name. ``size`` (w, h) and ``fps`` are requests to the driver.
    """

    live = True
    has_video, has_audio = True, False

    def __init__(self, index: str | int = 0, size: tuple[int, int] | None = None,
                 fps: int | None = None) -> None:
        self.index = str(index)
        self.fmt, self.device = _webcam_spec(self.index)
        self.name = f"webcam {self.index} ({self.device})"
        self.options = {}
        if size:
            self.options["video_size"] = f"{size[0]}x{size[1]}"
        if fps:
            self.options["framerate"] = str(fps)
        self._c = None

    def open(self, clock: Clock | None = None) -> None:
        import av

        self.clock = clock or Clock()
        if self.fmt == "v4l2" and not Path(self.device).exists():
            raise SourceError(f"{self.name}: no such device")
        try:
            self._c = av.open(self.device, format=self.fmt, options=self.options)
        except (av.FFmpegError, OSError, ValueError) as e:
            raise SourceError(f"{self.name}: cannot open (missing or busy?): {e}") from None
        if not self._c.streams.video:
            self.close()
            raise SourceError(f"{self.name}: device has no video stream")

    def run(self, sink: Sink, stop: threading.Event) -> None:
        import av

        try:
            for frame in self._c.decode(video=0):
                if stop.is_set():
                    break
                sink.video(VideoFrame(self.clock.now(), frame))
        except av.FFmpegError as e:
            if not stop.is_set():
                raise SourceError(f"{self.name}: capture failed: {e}") from None

    def close(self) -> None:
        if self._c is not None:
            self._c.close()
            self._c = None


StreamFactory = Callable[..., object]  # sounddevice.InputStream-like: start/stop/close


def _sounddevice_stream(**kw):
    try:
        import sounddevice as sd
    except OSError as e:  # PortAudio library missing
        raise SourceError(f"microphone: PortAudio is not available ({e})") from None
    return sd.InputStream(**kw)


class MicSource:
    """A microphone through a ``sounddevice.InputStream`` callback.

    The callback stamps each block on arrival (time of its first sample), mixes to
    mono, resamples to 16 kHz and appends; nothing else happens on the audio thread.
    ``stream_factory`` builds the stream (tests pass a fake); it receives
    ``samplerate, channels, blocksize, device, dtype, callback``.
    """

    live = True
    has_video, has_audio = False, True

    def __init__(self, device: str | int | None = None, rate: int | None = None,
                 channels: int = 1, blocksize: int = MIC_BLOCK,
                 stream_factory: StreamFactory | None = None) -> None:
        self.device = device
        self.rate = rate
        self.channels = channels
        self.blocksize = blocksize
        self.name = f"microphone {device if device is not None else '(default)'}"
        self._factory = stream_factory
        self._stream = None
        self._sink: Sink | None = None
        self._res = Resampler()

    def _resolve_rate(self) -> int:
        if self.rate:
            return int(self.rate)
        if self._factory is not None:
            return MIC_RATE
        try:
            import sounddevice as sd

            info = sd.query_devices(self.device, "input")
        except OSError as e:
            raise SourceError(f"microphone: PortAudio is not available ({e})") from None
        except (ValueError, Exception) as e:  # sd raises ValueError / PortAudioError
            raise SourceError(f"{self.name}: no such input device ({e})") from None
        return int(info["default_samplerate"]) or MIC_RATE

    def open(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.rate = self._resolve_rate()
        factory = self._factory or _sounddevice_stream
        try:
            self._stream = factory(
                samplerate=self.rate, channels=self.channels, blocksize=self.blocksize,
                device=self.device, dtype="float32", callback=self._callback,
            )
        except SourceError:
            raise
        except Exception as e:  # PortAudioError, ValueError: missing or busy device
            raise SourceError(f"{self.name}: cannot open (missing or busy?): {e}") from None

    def _callback(self, indata, frames, time_info, status) -> None:
        t = self.clock.now() - frames / self.rate
        x = self._res.from_array(np.asarray(indata).copy(), self.rate)
        if len(x) and self._sink is not None:
            self._sink.audio(AudioChunk(t, x))

    def run(self, sink: Sink, stop: threading.Event) -> None:
        self._sink = sink
        try:
            self._stream.start()
        except Exception as e:
            raise SourceError(f"{self.name}: cannot start (busy?): {e}") from None
        stop.wait()
        self._stream.stop()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None


def _options(spec: str, allowed: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``"name?k=v&k=v"`` → (name, {k: v}); an option not in ``allowed`` is a ValueError."""
    name, _, query = spec.partition("?")
    opts = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    bad = sorted(set(opts) - set(allowed))
    if bad:
        raise ValueError(f"source {spec!r}: unknown option(s) {', '.join(bad)}; allowed: {', '.join(allowed)}")
    return name, opts


def _int_option(spec: str, opts: dict[str, str], key: str) -> int | None:
    if key not in opts:
        return None
    try:
        value = int(opts[key])
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"source {spec!r}: {key} must be a positive integer, got {opts[key]!r}")
    return value


def open_source(spec: str, realtime: bool = False) -> Source:
    """A source spec → a Source (not yet opened):

    ``webcam`` / ``webcam:N`` (options ``?size=WxH&fps=F``, requests to the driver),
    ``mic`` / ``mic:DEVICE`` (options ``?rate=HZ&channels=C``), or a file path.
    E.g. ``webcam:0?size=1280x720&fps=30``, ``mic:1?rate=48000&channels=2``.
    Raises ValueError for an unknown or malformed option."""
    if spec == "webcam" or spec.startswith(("webcam:", "webcam?")):
        name, opts = _options(spec, ("size", "fps"))
        size = None
        if "size" in opts:
            w, _, h = opts["size"].partition("x")
            if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
                raise ValueError(f"source {spec!r}: size must be WIDTHxHEIGHT, got {opts['size']!r}")
            size = (int(w), int(h))
        return WebcamSource(name.partition(":")[2] or "0", size=size, fps=_int_option(spec, opts, "fps"))
    if spec == "mic" or spec.startswith(("mic:", "mic?")):
        name, opts = _options(spec, ("rate", "channels"))
        dev = name.partition(":")[2] or None
        return MicSource(int(dev) if dev and dev.isdigit() else dev, rate=_int_option(spec, opts, "rate"),
                         channels=_int_option(spec, opts, "channels") or 1)
    return FileSource(spec, realtime=realtime)
