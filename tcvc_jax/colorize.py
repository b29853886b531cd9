"""python -m tcvc_jax.colorize: colorize any video, frame folder or photo with a TCVC checkpoint.

  python -m tcvc_jax.colorize INPUT OUTPUT --checkpoint PATH [options]

Argument parsing and messages only; the work is `tcvc_jax.streaming.colorize_file` (streaming,
constant memory, scene cuts). The output is written under a temporary name and renamed when
complete; an existing output is only replaced with `--overwrite`. Exit codes: see `tcvc_jax.cli`.
"""

import argparse
import os
import sys

from absl import logging

from tcvc_jax import cli
from tcvc_jax import flag_parsing


def build_parser():
  """The command-line interface."""
  # Imported here (it imports JAX, ~2 s): `main` has set its signal handling by now.
  from tcvc_jax.evaluation import windows  # pylint: disable=g-import-not-at-top
  parser = cli.ArgumentParser(
      prog="python -m tcvc_jax.colorize",
      formatter_class=argparse.RawDescriptionHelpFormatter,
      description=(
          "Colorize a black-and-white (or colour) video with a TCVC checkpoint.\n\n"
          "Reads a video file (any container FFmpeg reads) or a folder of PNG/JPEG frames,\n"
          "gray or colour (only the lightness is used), 8 or 16 bit, any resolution. The\n"
          "full-resolution lightness is kept; the network predicts colour at --size (a colour\n"
          "too vivid for its lightness, e.g. any hue on white, is clipped to sRGB per channel,\n"
          "as in the original code, which moves that pixel's lightness). Memory\n"
          "stays flat in the video's length: frames are read, colorized and written window by\n"
          "window. Scene cuts are detected, and colours never propagate across one. A single\n"
          "image (a photo, a 1-frame video) is colorized by the model's anchor colorizer."),
      epilog=(
          "examples:\n"
          "  python -m tcvc_jax.colorize old_film.mp4 old_film_color.mp4 --checkpoint ckpt/\n"
          "  python -m tcvc_jax.colorize frames/ colorized/ --checkpoint 80000_G.pth \\\n"
          "      --size 256x448\n"
          "  python -m tcvc_jax.colorize film.mp4 out.mp4 --checkpoint ckpt/ \\\n"
          "      --reference 0:frame0_coloured.png\n"
          "  python -m tcvc_jax.colorize photo.jpg photo_color.png --checkpoint ckpt/\n\n"
          + cli.EXIT_CODES_HELP))
  parser.add_argument("input",
                      help="video file, folder of *.png / *.jpg frames (sorted by name), or one "
                      "such image")
  parser.add_argument("output", help="output video (.mp4 .m4v .mov .mkv: H.264, source fps, "
                      "first audio track (copied, or re-encoded as AAC where the container "
                      "cannot hold it) and title; an odd width or height: VP9 in .mp4 .mkv, 4:4:4 "
                      "H.264 in .mov .m4v), a folder for PNG frames (a path without extension) "
                      "or, for a 1-frame input, an image (.png, .jpg: quality 95, 4:4:4)")
  parser.add_argument("--checkpoint", required=True, metavar="PATH",
                      help="a train.py workdir (its latest checkpoint), a converted checkpoint "
                      "directory (python -m tcvc_jax.convert) or a TCVC .pth (the original's or "
                      "one exported here)")
  parser.add_argument("--size", default=str(windows.DEFAULT_NETWORK_SIZE), metavar="N|HxW",
                      help="network size: frames are resized to this for the model (multiples of "
                      "64 with FlowNet2, of 8 with the classical flow); default %(default)s")
  parser.add_argument("--interval", type=int, default=windows.DEFAULT_INTERVAL, metavar="T",
                      help="frames between two anchors; windows hold T + 2 frames "
                      "(default %(default)s, as the paper)")
  parser.add_argument("--no-scene-cuts", action="store_true",
                      help="do not detect scene cuts (by default a cut starts a new window, so "
                      "colours never cross it)")
  parser.add_argument("--gray-mode", choices=windows.GRAY_MODES, default="srgb",
                      help="one-channel input: 'srgb' takes gray as an sRGB level (true "
                      "lightness), 'original' as the original no-GT script did (gray - 0.5); "
                      "default %(default)s")
  parser.add_argument("--fps", type=float, default=None,
                      help="frame rate of the output video for a frame-folder input (default 25); "
                      "for a video, its frames evenly spaced at this rate instead of their own "
                      "times (every frame kept, so the length changes and the audio is dropped)")
  parser.add_argument("--bit-depth", choices=("auto", "8", "16"), default="auto",
                      help="bits per sample of the output: 'auto' (default) writes 16-bit PNGs "
                      "when the source is deeper than 8 bits (16-bit PNGs, 10-bit video) and the "
                      "output is a frame folder or a .png, else 8; videos and JPEGs are written "
                      "at 8 bits")
  parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="float32",
                      help="compute precision (default %(default)s)")
  parser.add_argument("--reference", action="append", default=[], metavar="FRAME:IMAGE",
                      help="guided colorization: a colour image of frame FRAME (e.g. coloured by "
                      "hand; any size, its colours are used); repeatable. The frame becomes an "
                      "anchor and its colours are carried through its shot")
  parser.add_argument("--hints", metavar="FILE.json",
                      help='guided colorization: colour clicks, a JSON list of {"frame": 12, "x": '
                      '0.41, "y": 0.73, "rgb": [200, 30, 40]} (x, y relative to the frame; '
                      'optional "patch": odd size in network pixels, default 3)')
  parser.add_argument("--compilation-cache", default="auto", metavar="auto|off|DIR",
                      help="persistent XLA compilation cache, so that a second run of the same "
                      "video size starts in seconds (default: a folder in the user's cache)")
  parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")
  parser.add_argument("--verbose", action="store_true",
                      help="log details and show tracebacks on errors")
  return parser


@cli.ends_on_interrupt
def main(argv=None):
  """Runs the CLI; returns the exit status."""
  args = build_parser().parse_args(argv)
  logging.set_verbosity(logging.INFO if args.verbose else logging.ERROR)
  problem = _usage_problem(args)
  if problem:  # a command-line mistake: exit 2, before any file is read or written
    print(f"error: {problem}", file=sys.stderr)
    return cli.EXIT_USAGE
  return cli.run(lambda: _colorize(args), verbose=args.verbose, final_output=args.output,
                 pixels_per_call=window_pixels(args))


def window_pixels(args):
  """Input pixels of one window (interval + 2 frames at the network size); None for bad flags,
  which the work reports."""
  from tcvc_jax import streaming  # pylint: disable=g-import-not-at-top
  try:
    h, w = streaming.parse_size(args.size)
  except ValueError:
    return None
  return (args.interval + 2) * h * w if args.interval >= 0 else None


def _usage_problem(args):
  """What is wrong with the flags' values on their own (no file read), or None."""
  from tcvc_jax import guidance  # pylint: disable=g-import-not-at-top
  from tcvc_jax import streaming  # pylint: disable=g-import-not-at-top
  from tcvc_jax.media import writing  # pylint: disable=g-import-not-at-top
  if args.interval < 0:
    return f"--interval must be >= 0, got {args.interval}"
  ext = os.path.splitext(args.output)[1].lower()
  if args.bit_depth == "16" and ext in writing.EIGHT_BIT_OUTPUT_EXTENSIONS:
    kind = "a video" if ext in writing.VIDEO_OUTPUT_EXTENSIONS else "a JPEG"
    return ("--bit-depth 16 is for a frame folder (a path without extension) or .png output; "
            f"{args.output} is {kind}, written at 8 bits")
  try:
    writing.output_kind(args.output)
    writing.check_paths(args.input, args.output)
  except ValueError as e:  # (MediaError is one)
    return str(e)
  try:
    streaming.parse_size(args.size)
    streaming.check_fps(args.fps)
  except streaming.UsageError as e:
    return f"--size: {e}" if str(e).startswith("bad network size") else f"--{e}"
  frames = []
  for text in args.reference:
    try:
      frames.append(guidance.parse_reference(text)[0])
    except guidance.GuidanceError as e:
      return str(e)
    if frames.count(frames[-1]) > 1:
      return f"--reference: frame {frames[-1]} is given twice"
  return None


def _colorize(args):
  from tcvc_jax import atomic  # pylint: disable=g-import-not-at-top
  from tcvc_jax import guidance  # pylint: disable=g-import-not-at-top
  from tcvc_jax import streaming  # pylint: disable=g-import-not-at-top
  # (colorize_file checks the input and the checkpoint)
  atomic.check_keeps_inputs(args.output, [("the --hints file", args.hints)] + [
      ("the --reference image", guidance.parse_reference(text)[1]) for text in args.reference])
  flag_parsing.enable_compilation_cache(args.compilation_cache)
  hints = _user_hints(args, streaming.parse_size(args.size))
  result = streaming.colorize_file(
      args.input, args.output, args.checkpoint, interval=args.interval,
      network_size=streaming.parse_size(args.size), detect_cuts=not args.no_scene_cuts,
      gray_mode=args.gray_mode, overwrite=args.overwrite, fps=args.fps,
      progress=not args.quiet, dtype=streaming.DTYPES[args.dtype], hints=hints,
      bit_depth=None if args.bit_depth == "auto" else int(args.bit_depth))
  for note in result.warnings:
    print(f"warning: {note}", file=sys.stderr)
  cuts = ", ".join(map(str, result.cuts)) if result.cuts else "none"
  depth = " (16-bit PNG)" if result.bit_depth == 16 else ""
  plural = "" if result.frames == 1 else "s"
  print(f"wrote {result.output}: {result.frames} frame{plural}{depth} in {result.seconds:.1f} s "
        f"({result.frames / max(result.seconds, 1e-9):.2f} frames/s overall); scene cuts: {cuts}")
  return cli.EXIT_OK


def _user_hints(args, size):
  """{frame: FrameHint} from --reference and --hints (clicks win over a reference)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  from tcvc_jax import guidance  # pylint: disable=g-import-not-at-top
  from tcvc_jax.media import av_frames  # pylint: disable=g-import-not-at-top
  from tcvc_jax.media import reading  # pylint: disable=g-import-not-at-top
  hints = {}
  shapes = None
  for text in args.reference:
    frame, path = guidance.parse_reference(text)  # checked with the other flags
    try:
      image = reading.read_image(path)
      hint = guidance.reference_hint(image, av_frames.image_alpha(path))
    except guidance.GuidanceError as e:
      raise guidance.GuidanceError(f"--reference {text}: {e}") from None
    if shapes is None:  # the frames' aspect ratios as stored and as shown (non-square pixels)
      src = reading.open_source(args.input)
      shapes = (src.width / src.height, src.width * float(src.sample_aspect_ratio) / src.height,
                f"{src.width}x{src.height}")
    ratio = image.shape[1] / image.shape[0]
    if min(abs(np.log(ratio / r)) for r in shapes[:2]) > 0.05:  # another shape by over 5 %
      print(f"warning: --reference {text}: the image is {image.shape[1]}x{image.shape[0]}, the "
            f"frames {shapes[2]}: another shape, so it is stretched onto the frame (a crop, or "
            "another frame?)", file=sys.stderr)
    if np.abs(hint.ab).max() < 0.01:
      print(f"warning: --reference {text}: the image has no colour (gray); frame {frame} and the "
            "frames its colours reach will be pulled towards gray", file=sys.stderr)
    hints[frame] = hint
  if args.hints:
    for frame, clicks in guidance.read_clicks(args.hints).items():
      try:
        clicked = guidance.click_hint(clicks, *size)
      except guidance.GuidanceError as e:
        raise guidance.GuidanceError(f"{args.hints}: the clicks on frame {frame}: {e}") from e
      base = hints.get(frame)
      hints[frame] = guidance.merge(
          clicked, None if base is None else guidance.resize_hint(base, *size))
  return hints or None


if __name__ == "__main__":
  cli.exit(main())
