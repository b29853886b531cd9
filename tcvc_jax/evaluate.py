"""python -m tcvc_jax.evaluate (or eval.py): evaluate a checkpoint with the original test protocol.

  python -m tcvc_jax.evaluate --config eval[:multi|nogt|synthetic|guided] --workdir runs/eval \\
      --config.checkpoint=CKPT --config.data.root=TEST_SET

Writes colorized frames, one mp4 per clip, per-clip / per-frame CSV tables, summary.json and plots
into the workdir, all at the end (a run that fails or is interrupted leaves the workdir as it was),
and prints the summary. Exit codes: see tcvc_jax.cli; a bad config value is a usage error (2).
"""

import json
import os
import sys

from tcvc_jax import cli
from tcvc_jax import flag_parsing

_USAGE = __doc__.split("\n\n")[0] + "\n\n" + __doc__.split("\n\n")[1]
_EXAMPLES = """\
presets (--config eval:PRESET[,PRESET]; or a config file path):
  eval              one-sampling (interval 17) at 256x256, PSNR / SSIM / CDC / warping error
  eval:multi        the multi-sampling ensemble (intervals 17 and 19)
  eval:nogt         no ground truth: colorize and measure CDC only (frames may be gray)
  eval:synthetic    the embedded synthetic_clips/painted test split (the demo's), network size 64
  eval:guided       automatic vs a ground-truth reference per shot vs 10 clicks per anchor
  eval:tiny         a CPU-sized protocol (tests)

test set (data.root): one clip per frame folder (<root>/<clip>/*.png|jpg, colour: the ground truth)
or video file (<root>/<clip>.mp4, .mkv, ...); data.clips picks some by name. data.source='tfds'
(eval:synthetic) reads a TFDS split instead (data.name, data.split, data.data_dir).

main config keys (--config.KEY=VALUE; all of them: --show_config):
  checkpoint, data.root, data.clips, data.source, data.no_gt, data.gray_mode, protocol.network_size,
  protocol.interval_length, metrics.ssim, metrics.warp_error, metrics.warp_flow, outputs.frames,
  outputs.videos, hints.modes, dtype, overwrite

summary: psnr (dB, against the ground truth, higher is better; psnr_key / psnr_inter split it into
anchor and propagated frames), cdc (colour distribution consistency between nearby frames, lower is
better), ssim, warp_error (flow-warped difference of consecutive outputs, lower is better)
"""


def _config_problem(config):
  """The config's first problem in one line, or None (before any folder is made or the model is
  loaded)."""
  from tcvc_jax.evaluation import eval_config  # pylint: disable=g-import-not-at-top
  modes = config.hints.modes  # --config.hints.modes=auto,clicks comes as ('auto,clicks',)
  if isinstance(modes, (tuple, list)) and any("," in str(m) for m in modes):
    config.hints.modes = tuple(x.strip() for m in modes for x in str(m).split(",") if x.strip())
  try:
    eval_config.validate_config(config)
  except eval_config.EvalError as e:
    return cli.one_line(e)
  return None


@cli.ends_on_interrupt
def main(argv=None):
  argv = sys.argv if argv is None else argv
  parsed = flag_parsing.parse(argv, _USAGE, _EXAMPLES, None, None,
                              "Folder for colorized frames, videos, metrics and plots.",
                              _config_problem)
  if isinstance(parsed, int):
    return parsed
  config, workdir, verbose, cache = parsed
  from tcvc_jax.evaluation import evaluator  # pylint: disable=g-import-not-at-top
  problem = _config_problem(config)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return cli.EXIT_USAGE

  def work():
    flag_parsing.quiet_third_party_logs(verbose)
    flag_parsing.enable_compilation_cache(cache)
    from tcvc_jax.evaluation import report  # pylint: disable=g-import-not-at-top
    summary = evaluator.evaluate(config, workdir, progress=True)
    if "guided" in summary:
      from tcvc_jax.evaluation import guided  # pylint: disable=g-import-not-at-top
      print(guided.table(summary["guided"]))
      print(f"(PSNR far: frames more than {config.protocol.interval_length + 1} frames from "
            "every reference frame; the same frames for every mode)")
    print(json.dumps(report.to_json_value({k: summary[k] for k in evaluator.SUMMARY_KEYS})))
    gray = summary["psnr_gray"]
    print((f"PSNR {summary['psnr']:.2f} dB; the gray (ab = 0) baseline scores {gray:.2f} dB. "
           if gray == gray else "") + f"Results in {workdir} (summary.json, per_clip.csv, ...)",
          file=sys.stderr)
    return cli.EXIT_OK

  return cli.run(work, verbose=verbose, final_output=os.path.join(workdir, "summary.json"),
                 pixels_per_call=window_pixels(config))


def window_pixels(config):
  """Input pixels of the protocol's longest window at the network size; None if not numbers."""
  p = config.protocol
  try:
    intervals = [p.interval_length] + (list(p.ensemble_intervals) if p.mode == "multi" else [])
    return (max(int(t) for t in intervals) + 2) * int(p.network_size) ** 2
  except (TypeError, ValueError, AttributeError):
    return None


if __name__ == "__main__":
  cli.exit(main())
