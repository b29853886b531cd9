"""Draws docs/guided.png: automatic vs guided (one reference frame) vs ground truth, synthetic clip.

  python docs/make_guided_figure.py --checkpoint runs/demo [--clip 0] [--out docs/guided.png]
      [--overwrite]

The clip is generated (no download) like the demo's synthetic_clips/painted test clips, with the
seed of test clip `--clip`, as one shot; the reference is the ground-truth colour of the shot's
first frame, given as `--reference 0:...` would be. Frames shown: the reference frame, and frames
further and further from it.
"""

import argparse
import io
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main():
  parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
  parser.add_argument("--checkpoint", default="runs/demo", help="a workdir or converted folder")
  parser.add_argument("--clip", type=int, default=0, help="synthetic test clip index")
  parser.add_argument("--interval", type=int, default=4, help="window interval T")
  parser.add_argument("--out", default=os.path.join(REPO, "docs", "guided.png"))
  parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
  args = parser.parse_args()
  if args.clip < 0 or args.interval < 0:
    parser.error(f"--clip and --interval must be >= 0, got {args.clip} and {args.interval}")
  if os.path.splitext(args.out)[1].lower() != ".png":
    parser.error(f"--out {args.out}: the figure is a PNG; name it .png")
  if os.path.exists(args.out) and not args.overwrite:
    print(f"error: output exists: {args.out} (pass --overwrite to replace it)", file=sys.stderr)
    return 1
  from tcvc_jax import cli  # pylint: disable=g-import-not-at-top
  return cli.run(lambda: _draw(args))


def _draw(args):
  """Draws the figure into args.out; returns the exit code."""
  from matplotlib import figure  # pylint: disable=g-import-not-at-top

  import tcvc_jax  # pylint: disable=g-import-not-at-top
  from tcvc_jax import atomic  # pylint: disable=g-import-not-at-top
  from tcvc_jax import guidance  # pylint: disable=g-import-not-at-top
  from tcvc_jax import streaming  # pylint: disable=g-import-not-at-top
  from tcvc_jax.data import datasets  # pylint: disable=g-import-not-at-top
  from tcvc_jax.data import synthetic  # pylint: disable=g-import-not-at-top
  from tcvc_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top
  colorizer = tcvc_jax.load(args.checkpoint)
  # A clip of the painted config's kind with the seed of test clip i, but one shot (max_cuts=0).
  painted = datasets.SyntheticClips.builder_configs["painted"]
  clip = synthetic.generate_clip((painted.seed, 2, args.clip), height=painted.height,
                                 width=painted.width, num_frames=painted.num_frames, max_cuts=0,
                                 paint_probability=painted.paint_probability)
  gt = clip.frames
  auto = np.stack(list(streaming.colorize_frames(list(gt), colorizer, args.interval, 64, [])))
  hints = {0: guidance.reference_hint(gt[0])}
  guided = np.stack(list(streaming.colorize_frames(list(gt), colorizer, args.interval, 64, [],
                                                   hints=hints)))
  shown = [0, 6, 12, 19]
  rows = [("automatic", auto), ("guided by frame 0", guided), ("ground truth", gt)]
  fig = figure.Figure(figsize=(2 * len(shown), 2.1 * len(rows) + 0.4))
  for r, (name, frames) in enumerate(rows):
    for c, t in enumerate(shown):
      ax = fig.add_subplot(len(rows), len(shown), r * len(shown) + c + 1)
      ax.imshow(frames[t], interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if c == 0:
        ax.set_ylabel(name)
      if r == 0:
        ax.set_title(f"frame {t}")
      if r < 2:
        psnr = metrics.psnr_clip(gt[t:t + 1], frames[t:t + 1], args.interval).avg
        ax.set_xlabel(f"{psnr:.1f} dB")
  fig.suptitle("TCVC demo model: one reference frame carried through the shot")
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=80)
  atomic.write_bytes(args.out, buf.getvalue(), overwrite=True)
  print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
