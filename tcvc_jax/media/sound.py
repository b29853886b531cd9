"""A colorized video's sound: the source's first audio stream beside the new pictures.

The stream is copied packet by packet where the output's container holds its codec; where it does
not (IMA ADPCM or 8-bit PCM from an old camera's AVI into an mp4), it is decoded and re-encoded as
AAC, with a note saying so. PCM of any kind is re-encoded for an mp4 / m4v too: FFmpeg writes it
there, but browsers and QuickTime do not play such a file's sound (a .mov or .mkv keeps it).
Timing: the output starts where the source's earlier stream (its video or this audio) starts, so
sound that begins before the first picture is kept and the pictures keep their place against it
(`video_offset`). Other streams (more audio tracks, subtitles, data) are not kept, and a note names
them.
"""

import collections
import fractions
import io

import av

from tcvc_jax.media.av_frames import main_video_stream
from tcvc_jax.media.av_frames import reason
from tcvc_jax.media.reading import MediaError

REENCODE_CODEC = "aac"  # held by every output container (mp4, m4v, mov, mkv)
_AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200,
              96000)  # sample rates AAC codes (others are resampled to the next one up)
# Containers that take PCM from FFmpeg but whose players do not play it (ISO 23003-5 'ipcm').
_NO_PLAYABLE_PCM = ("mp4", "ipod")
_LAYOUTS = {1: "mono", 2: "stereo", 3: "2.1", 4: "quad", 5: "5.0", 6: "5.1", 7: "6.1", 8: "7.1"}


def _start(stream):
  """When `stream` starts, in seconds (a Fraction; None: unknown)."""
  return None if stream.start_time is None else stream.start_time * stream.time_base


def _first_picture(path):
  """When the first picture of `path` that decodes is shown (seconds, a Fraction; None: none
  decodes, or it has no time).

  The reader's frame times count from it; a recording cut before a key frame starts with packets
  that decode to nothing, so the stream's own start comes earlier.
  """
  try:
    with av.open(path) as container:
      stream = main_video_stream(container)
      for packet in container.demux(stream):
        try:
          frames = packet.decode()
        except av.error.FFmpegError:
          continue  # (as the reader: a packet the decoder refuses is skipped)
        for frame in frames:
          return None if frame.pts is None else frame.pts * stream.time_base
  except (av.error.FFmpegError, OSError):
    pass
  return None


_PRIMING = fractions.Fraction(1, 5)  # seconds


def _first_sound(container, stream):
  """When the first packet of audio `stream` is played (seconds, a Fraction; None: unknown). A
  Matroska file's audio from 0 under pictures from 5 s listed its stream as starting at 5 s, and
  an .mp4 output lost the first 5 s of its sound."""
  try:
    for packet in container.demux(stream):
      if packet.pts is not None:
        return packet.pts * stream.time_base
  except (av.error.FFmpegError, OSError):
    pass
  return None


def _layout(stream):
  name = stream.layout.name  # 'N channels' where the source names no layout: not an encoder's
  return _LAYOUTS.get(stream.channels, name) if "channels" in name else name


def _plural(n, word):
  return f"{n} {word}{'' if n == 1 else 's'}"


# Container tags the muxer writes itself (or that describe the old file), not the film's own.
_MUXER_TAGS = ("major_brand", "minor_version", "compatible_brands", "encoder", "duration")


def describe_source(path):
  """What a colorized video of the file `path` keeps of its other contents.

  Returns:
    (tags, note): the container's own tags (title, creation time, ...: {name: value}), and a
    note naming the streams that are not kept (more audio tracks, other videos, subtitles, data;
    not a cover picture), or None.
  """
  try:
    with av.open(path) as container:
      video = main_video_stream(container) if container.streams.video else None
      tags = {k: v for k, v in container.metadata.items() if k.lower() not in _MUXER_TAGS}
      kinds = collections.Counter()
      for s in container.streams:
        if s.type == "video" and s is not video and not (
            s.disposition & av.stream.Disposition.attached_pic):
          kinds["video stream"] += 1
        elif s.type == "audio" and s is not container.streams.audio[0]:
          kinds["further audio track"] += 1
        elif s.type in ("subtitle", "data", "attachment"):
          kinds[f"{s.type} stream"] += 1
  except (av.error.FFmpegError, OSError):
    return {}, None  # (reading reports what is wrong with the file)
  if not kinds:
    return tags, None
  what = ", ".join(_plural(n, kind) for kind, n in kinds.items())
  return tags, f"{path}: its {what} {'is' if kinds.total() == 1 else 'are'} not kept"


class SourceSound:
  """The first audio stream of a source file, written into an output container beside its video.

  Use: `add_to(out)` once the output's video stream exists, `mux_until(out, t)` after each
  picture, `finish(out)` before closing the output, `close()` in any case.
  """

  def __init__(self, path, container_format, ext):
    """Opens `path` and checks that its audio, if any, can go into a `container_format` file.

    Raises:
      MediaError: `path` cannot be read, or its audio fits the container neither copied nor
        re-encoded.
    """
    self.notes, self.video_offset, self.copy = [], fractions.Fraction(0), True
    self._out_stream = self._packets = self._next = None
    self._shift = 0  # audio ticks of the source at our output's time 0
    try:
      self._in = av.open(path)
    except (av.error.FFmpegError, OSError) as e:
      raise MediaError(f"cannot read audio from {path}: {reason(e)}") from e
    streams = self._in.streams
    self.stream = streams.audio[0] if streams.audio else None
    if self.stream is None:
      return
    name, rate = self.stream.codec_context.name, self.stream.rate
    self._rate = next((r for r in _AAC_RATES if r >= (rate or 0)), _AAC_RATES[-1])
    unplayable = name.startswith("pcm_") and container_format in _NO_PLAYABLE_PCM
    self.copy = not unplayable and self._fits(path, container_format, copy=True)
    if not self.copy:
      how = REENCODE_CODEC.upper() + (f" at {self._rate} Hz" if self._rate != rate else "")
      if not self._fits(path, container_format, copy=False):
        raise MediaError(f"cannot write the {name} audio of {path} into a {ext} file, copied or "
                         f"re-encoded as {how}")
      self.notes.append(
          f"the {name} audio of {path} " + (
              f"would not play from a {ext} file: re-encoded as {how} (a .mov or .mkv output "
              "keeps it as it is)" if unplayable else
              f"cannot be copied into a {ext} file: re-encoded as {how}"))
    video = None
    if streams.video:  # (the stream's listed start where no picture tells)
      video = _first_picture(path)
      video = _start(main_video_stream(self._in)) if video is None else video
    with av.open(path) as container:
      audio = _first_sound(container, container.streams.audio[0])
    listed = _start(self.stream)  # (a codec's priming packets come tens of ms before it)
    audio = listed if audio is None or (listed is not None and listed - audio < _PRIMING) else audio
    starts = [t for t in (video, audio) if t is not None]
    if starts:
      base = min(starts)
      self.video_offset = (video - base) if video is not None else fractions.Fraction(0)
      self._shift = round(base / self.stream.time_base)

  def _fits(self, path, container_format, copy):
    """Whether a `container_format` file takes this stream, copied or re-encoded: tried in memory
    on its first packet, header to trailer (some muxers refuse a stream only at the trailer: mp4
    refuses stereo PCM whose layout has no name there), so that it fails before any work."""
    try:
      with av.open(path) as src, av.open(io.BytesIO(), "w", format=container_format) as probe:
        out = self._add(probe, copy)
        probe.start_encoding()
        for pkt in src.demux(src.streams.audio[0]):
          if pkt.dts is None:
            continue
          if copy:
            pkt.stream = out
            probe.mux(pkt)
          break
      return True
    except (av.error.FFmpegError, ValueError):
      return False

  def _add(self, out, copy):
    if copy:
      s = out.add_stream_from_template(self.stream)
    else:
      s = out.add_stream(REENCODE_CODEC, rate=self._rate)
      s.layout = _layout(self.stream)
    if "language" in self.stream.metadata:
      s.metadata["language"] = self.stream.metadata["language"]
    return s

  def add_to(self, out):
    """Adds the audio stream to `out` (after its video stream, so that video is stream 0)."""
    if self.stream is not None:
      self._out_stream = self._add(out, self.copy)
      self._packets = self._in.demux(self.stream)

  def mux_until(self, out, t):
    """Writes the source's audio that starts before output time t (seconds; None: all the rest).

    Interleaving audio with the video as it is written keeps the muxer's buffer small.
    """
    while self._packets is not None:
      if self._next is None:
        self._next = next(self._packets, None)
        if self._next is None:
          self._packets = None
          return
      pkt = self._next
      if pkt.dts is None:  # the demuxer's flush packet
        self._next = None
        continue
      if t is not None and pkt.pts is not None and (pkt.pts - self._shift) * pkt.time_base > t:
        return
      self._next = None
      if self.copy:
        if self._shift:
          pkt.pts = None if pkt.pts is None else pkt.pts - self._shift
          pkt.dts = pkt.dts - self._shift
        pkt.stream = self._out_stream
        out.mux(pkt)
        continue
      try:
        frames = pkt.decode()
      except av.error.FFmpegError:
        continue  # damaged sound: skipped, as the ffmpeg tool does (and the reader for pictures)
      for frame in frames:
        if frame.pts is not None:
          frame.pts -= self._shift
        out.mux(self._out_stream.encode(frame))

  def finish(self, out):
    """Writes the rest of the audio (and flushes the encoder of re-encoded sound)."""
    self.mux_until(out, None)
    if self._out_stream is not None and not self.copy:
      out.mux(self._out_stream.encode(None))

  def close(self):
    if self._in is not None:
      self._in.close()
      self._in = None
