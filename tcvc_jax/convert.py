"""python -m tcvc_jax.convert: PyTorch checkpoints <-> tcvc_jax checkpoints.

  python -m tcvc_jax.convert SRC.pth OUT_DIR
      PyTorch (TCVC_IDC, SIGGRAPH17, FlowNet2) -> tcvc_jax
  python -m tcvc_jax.convert CONVERTED_DIR OUT.pth
      back to the original state_dict, bit for bit
  python -m tcvc_jax.convert WORKDIR OUT.pth
      a train.py run (latest or --step N) -> TCVC_IDC .pth

No PyTorch is needed: `.pth` files are read and written by tcvc_jax.pth, which refuses any file that
asks to run code. The library behind it: porting.py (to tcvc_jax), export.py (to PyTorch).
"""

import argparse
import os

from tcvc_jax import cli

_EPILOG = cli.EXIT_CODES_HELP


# The names PyTorch checkpoints go by (a .pth written as out.txt or out.mp4 is a mistake).
_PTH_EXTENSIONS = (".pth", ".pt", ".tar", ".ckpt", ".bin")


def build_parser():
  parser = cli.ArgumentParser(
      prog="python -m tcvc_jax.convert",
      description="Convert TCVC / SIGGRAPH17 / FlowNet2 PyTorch checkpoints to tcvc_jax checkpoint "
                  "folders and back, and export train.py runs as the original's TCVC_IDC "
                  "state_dict. The direction follows SRC: a .pth file becomes a checkpoint folder; "
                  "a converted folder or a train.py workdir becomes a .pth file.",
      epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("src", help="a PyTorch .pth / .pth.tar file, a converted checkpoint folder, "
                                  "or a train.py workdir")
  parser.add_argument("out", help="output folder (from .pth) or .pth file (from a folder)")
  parser.add_argument("--step", type=int, default=None,
                      help="with a workdir: the checkpoint step to export (default: the latest)")
  parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
  parser.add_argument("--verbose", action="store_true", help="show tracebacks")
  return parser


def _convert(args):
  from tcvc_jax import atomic  # pylint: disable=g-import-not-at-top
  from tcvc_jax import converted  # pylint: disable=g-import-not-at-top
  from tcvc_jax import export  # pylint: disable=g-import-not-at-top
  from tcvc_jax.training import checkpointing  # pylint: disable=g-import-not-at-top
  src = args.src
  for name, value in (("SRC", src), ("OUT", args.out)):
    if not value.strip():
      raise cli.UsageMistake(f"{name} is empty: give a file or folder name")
  if not os.path.exists(src):
    raise cli.UserError(f"{src}: no such file or folder")
  atomic.check_apart(args.out, src)
  if args.step is not None and args.step < 0:  # (a step is a count of training steps)
    raise cli.UsageMistake(f"--step must be a step number >= 0, got {args.step}")
  if args.step is not None and not checkpointing.is_workdir(src):
    raise cli.UsageMistake(f"--step needs a train.py workdir; {src} is not one")
  ext = os.path.splitext(args.out)[1].lower()
  if (os.path.isdir(src) and os.path.splitext(src)[1].lower() in _PTH_EXTENSIONS
      and not converted.is_converted_dir(src) and not checkpointing.is_workdir(src)):
    raise cli.UserError(f"{src}: is a folder, not a PyTorch file (nor a checkpoint folder)")
  if os.path.isdir(src) and ext not in _PTH_EXTENSIONS:  # (none: a file named like a folder)
    raise cli.UsageMistake(f"{args.out}: a folder converts to a PyTorch file; name it "
                        + " / ".join(_PTH_EXTENSIONS))
  if not os.path.isdir(src) and ext in _PTH_EXTENSIONS:
    raise cli.UsageMistake(f"{args.out}: a PyTorch file converts to a checkpoint folder; name it "
                        "without an extension")
  if os.path.isdir(src) and checkpointing.is_workdir(src):
    spec, step = export.export_workdir(src, args.out, step=args.step, overwrite=args.overwrite)
    print(f"wrote the TCVC_IDC state_dict of {src} at step {step} to {args.out}")
    if not spec.is_released_size:
      print("note: this model is smaller than the released one (or uses the classical flow); "
            "tcvc_jax loads the file, the original PyTorch code only loads full-size models with "
            "FlowNet2")
  elif os.path.isdir(src):
    export.export_converted(src, args.out, args.overwrite)
    print(f"wrote PyTorch state_dict {args.out}")
  else:
    _, kind = converted.convert_torch_file(src, args.out, args.overwrite)
    print(f"wrote {kind} checkpoint {args.out}")
  return cli.EXIT_OK


@cli.ends_on_interrupt
def main(argv=None):
  args = build_parser().parse_args(argv)
  return cli.run(lambda: _convert(args), verbose=args.verbose, final_output=args.out)


if __name__ == "__main__":
  cli.exit(main())
