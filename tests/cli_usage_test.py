"""The four tools as a user types them: --help, config and flag mistakes, file modes.

Each mistake exits with one `error:` line, and nothing is created or left behind. Signals and
interrupts: cli_test.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tcvc_jax import converted
from tcvc_jax import porting
from tcvc_jax.media import writing

import cli_testlib

# The shared fixtures (pytest finds them by name in this module).
from cli_testlib import checkpoint  # noqa: F401
from cli_testlib import frames  # noqa: F401

REPO = cli_testlib.REPO
_run = cli_testlib.run_tool


def _one_error_line(proc, code, text):
  assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
  assert "Traceback" not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and text in errors[0], proc.stderr[-2000:]


@pytest.mark.parametrize("tool", ["train.py", "eval.py", "-m tcvc_jax.colorize",
                                  "-m tcvc_jax.convert"])
def test_help_exits_0(tool, tmp_path):
  proc = _run([*tool.split(), "--help"], tmp_path, cwd=REPO)
  assert proc.returncode == 0, proc.stderr
  assert "exit codes" in proc.stdout
  if tool == "train.py":
    assert "demo:short" in proc.stdout and "default:released" in proc.stdout
    assert "num_train_steps" in proc.stdout
  if tool == "eval.py":
    assert "eval:synthetic" in proc.stdout and "data.root" in proc.stdout


# The mistakes run as commands (the rest in this process, the same main(): a subprocess each was
# ~4 s of imports, 2 minutes of the suite): a flag parse error, a config value error, a data one.
_AS_COMMANDS = (["--config.no_such_key=1"], ["--config.num_train_steps=0"],
                ["--config.data.name=bogus"], ["--config=eval:nopreset"],
                ["--config=eval", "--config.checkpoint=ck", "--config.data.root=clips",
                 "--config.data.clips=a,b,a"])


@pytest.mark.parametrize("args,text", [
    (["--config.no_such_key=1"], "no_such_key"),
    (["--config=configs/nothing.py"], "nothing.py"),
    (["--config=default:nopreset"], "error: default:nopreset: unknown preset"),  # as typed
    (["--config.num_train_steps=0"], "num_train_steps must be a positive integer"),
    (["--config.num_train_steps=-5"], "num_train_steps must be a positive integer"),
    (["--config.ckpt.max_to_keep=0"], "ckpt.max_to_keep must be a positive integer, got 0"),
    (['--config.mesh.axes=(("dta",-1),)'], "mesh.axes must be (name, size) pairs with a 'data' "
     "axis"),
    (["--config.mesh.axis_type=explict"], "mesh.axis_type must be 'auto' or 'explicit', got "
     "'explict'"),
    (["--config=default", "--config.data.crop_size=100"], "needs positive multiples of 64"),
    (["--config.model.colorizer_widths=(8,8)"], "colorizer_widths must have 10 entries"),
    (["--workdirr=x"], "workdirr"),
    # A config key given as a flag of its own: the key is named (the flag alone was).
    (["--num_train_step=5"], "Unknown command line flag 'num_train_step'; did you mean "
     "--config.num_train_steps?"),
    (["--config", "default", "--crop_size=64"], "did you mean --config.data.crop_size?"),
    (["--config=default:tiny", "--config.seed=1", "--config", "demo"],
     "--config is given 2 times (default:tiny, demo); give it once"),
    (["--config.optm.learning_rate=1"],  # a section's typo: named plainly, not a repr
     'unknown config key --config.optm.learning_rate; did you mean "optim" instead of "optm"?'),
    # Data settings: checked before any dataset is built, naming the key.
    (["--config.data.name=bogus"],
     "data.name: unknown dataset 'bogus'; known: synthetic_clips, video_frames"),
    (["--config.data.config=bogus"], "data.config: unknown config 'bogus' of dataset "
     "synthetic_clips; its configs: default, tiny, large, painted"),
    (["--config=default:tiny", "--config.data.name=video_frames"],  # the preset's config: tiny
     "data.config: unknown config 'tiny' of dataset video_frames; its configs: folder, folder_300, "
     "davis, davis_videvo"),
    (["--config.data.interval_list=()"], "data.interval_list must be a non-empty tuple"),
    (["--config.data.interval_list=(0,)"], "data.interval_list must be a non-empty tuple"),
    (["--config.data.crop_size=bogus"], "data.crop_size must be a positive integer, (height, "
     "width) or None"),
    (["--config.data.crop_size=(32,64)"], "data.rot90 needs a square crop_size, got 32x64"),
    (["--config.data.simulated_hints.max_patch=0"],
     "data.simulated_hints.max_patch must be a positive integer, got 0"),
    (["--config.data.simulated_hints.none_fraction=2"],
     "data.simulated_hints.none_fraction must be in [0, 1]"),
    (["--config.data.simulated_hints.location=bogus"], "data.simulated_hints.location must be"),
    (["--config.data.simulated_hints.points_p=0"], "data.simulated_hints.points_p must be in"),
    # What the devices tell (this process has 8) as the run starts: was exit 1, as a failed run.
    (["--config=default:tiny", "--config.data.batch_size=3"],
     "error: data.batch_size: global batch size 3 is not divisible by the 8 devices of the data "
     "axis"),
    (["--config=default:tiny", '--config.mesh.axes=(("data",3),)'],
     "error: mesh.axes: mesh [('data', 3)] has 3 devices, but there are 8"),
    # Was found only once the dataset was built and the step compiling (exit 1).
    (["--config.loss.criterion=l3"],
     "loss.criterion must be one of l1, l2, smooth_l1, charbonnier, got 'l3'"),
])
def test_train_config_mistakes_stop_before_any_work(args, text, tmp_path, monkeypatch):
  from tcvc_jax import train  # pylint: disable=g-import-not-at-top
  _config_mistake(train.main, "train.py", args, text, tmp_path, monkeypatch)


def _config_mistake(main, script, args, text, tmp_path, monkeypatch):
  """`script --workdir=work *args` (in this process unless in _AS_COMMANDS) stops with exit 2 and
  one line holding `text`, and makes no workdir."""
  argv = [os.path.join(REPO, script), "--workdir=work", *args]
  if args in _AS_COMMANDS:
    proc = _run(argv, tmp_path)
  else:
    proc = cli_testlib.run_main(main, argv, tmp_path, monkeypatch)
  _one_error_line(proc, 2, text)
  assert not os.path.exists(tmp_path / "work")


def test_show_config_checks_what_a_run_would(tmp_path):
  # --show_config printed a config that could not run (num_train_steps=0) with exit 0; and the
  # demo's eval.network_size (None) took no value from the command line (a NoneType field), though
  # train.py's own message says to set it there.
  proc = _run([os.path.join(REPO, "train.py"), "--config.eval.network_size=(64,128)",
               "--config.optim.milestones=-1", "--show_config"], tmp_path)
  _one_error_line(proc, 2, "optim.milestones must be whole numbers of updates >= 0")
  assert "network_size: !!python/tuple\n  - 64\n  - 128\n" in proc.stdout, proc.stdout
  proc = _run([os.path.join(REPO, "train.py"), "--config=default",
               "--config.eval.network_size=None", "--show_config"], tmp_path)
  assert proc.returncode == 0 and "  network_size: null\n" in proc.stdout, proc.stderr[-2000:]
  proc = _run([os.path.join(REPO, "eval.py"), "--config=eval", "--config.checkpoint=ck",
               "--config.data.root=clips", "--config.protocol.interval_length=-2",
               "--show_config"], tmp_path)
  _one_error_line(proc, 2, "protocol.interval_length")
  assert "interval_length: -2" in proc.stdout


@pytest.mark.parametrize("args,text", [
    (["--config=eval:nopreset"], "nopreset"),
    (["--config=eval", "--interval_length=3"], "did you mean --config.protocol.interval_length?"),
    (["--config=eval", "--config.protocol.network_sizee=3"], "network_sizee"),
    # The typo is named, not a good key whose name the did-you-mean hint holds.
    (["--config=eval", "--config.data.root=x", "--config.data.rot=y"],
     'unknown config key --config.data.rot; did you mean "root" instead of "rot"?'),
    # A list written as the other list keys are (ensemble_intervals=3,5): each mode is read.
    (["--config=eval", "--config.checkpoint=ck", "--config.data.root=clips",
      "--config.hints.modes=auto,bogus"],
     "hints.modes: unknown bogus; use auto, reference, clicks"),
    (["--config=eval", "--config.checkpoint=ck", "--config.data.root=clips",
      "--config.data.clips=a,b,a"], "data.clips names a twice"),
    (["--config.checkpoint=ck"], "--config.checkpoint without a config to set it in: pass --config "
     "eval[:PRESET] too"),
    # colorize's flag given to eval.py without a config: eval's own config is the one meant.
    (["--checkpoint=ck"], "did you mean --config eval --config.checkpoint?"),
    (["--config=eval", "--config.checkpoint=ck", "--config.data.root=clips",
      "--config.protocol.network_size=99999999992"], "network_size must be at most 8192"),
])
def test_eval_config_mistakes(args, text, tmp_path, monkeypatch):
  from tcvc_jax import evaluate  # pylint: disable=g-import-not-at-top
  _config_mistake(evaluate.main, "eval.py", args, text, tmp_path, monkeypatch)


def test_eval_bad_checkpoint_creates_no_workdir(tmp_path, frames):
  proc = _run([os.path.join(REPO, "eval.py"), "--config=eval:tiny", "--workdir=ev",
               f"--config.checkpoint={tmp_path / 'missing'}",
               f"--config.data.root={os.path.dirname(frames)}"], tmp_path)
  _one_error_line(proc, 1, "missing")
  assert not os.path.exists(tmp_path / "ev")


def test_outputs_follow_the_umask(checkpoint, frames, tmp_path):
  old = os.umask(0o022)
  try:
    proc = _run(["-m", "tcvc_jax.colorize", frames, "out.mp4", "--checkpoint", checkpoint,
                 "--size", "32", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = _run(["-m", "tcvc_jax.colorize", frames, "out_frames", "--checkpoint", checkpoint,
                 "--size", "32", "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = _run(["-m", "tcvc_jax.convert", checkpoint, "back.pth"], tmp_path)
    assert proc.returncode == 0, proc.stderr
  finally:
    os.umask(old)
  # The compilation cache is on by default, in the user's cache folder.
  assert os.listdir(tmp_path / "cache" / "tcvc_jax" / "xla")
  mode = lambda p: os.stat(tmp_path / p).st_mode & 0o777
  assert mode("out.mp4") == 0o644
  assert mode("out_frames") == 0o755 and mode("out_frames/000.png") == 0o644
  assert mode("back.pth") == 0o644


def test_convert_names_exactly_the_bad_keys(checkpoint, tmp_path):
  from tcvc_jax import pth  # pylint: disable=g-import-not-at-top
  variables, _, _ = converted.load_converted(checkpoint)
  sd = porting.flax_to_torch(variables)
  del sd["fea_key.model3.2.bias"]
  sd["weigting.conv2.weight"] = np.zeros((4, 9, 3, 3), np.float32)
  pth.save(sd, str(tmp_path / "bad.pth"))
  proc = _run(["-m", "tcvc_jax.convert", "bad.pth", "out"], tmp_path)
  _one_error_line(proc, 1, "missing keys: fea_key.model3.2.bias; mis-shaped keys: "
                  "weigting.conv2.weight (4, 9, 3, 3) (expected (4, 8, 3, 3))")
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("target", ["file/x.pth", "/proc/x.pth", "missing_dir/x.pth"])
def test_convert_to_an_unwritable_place(checkpoint, tmp_path, target):
  (tmp_path / "file").write_text("a file, not a folder")
  proc = _run(["-m", "tcvc_jax.convert", checkpoint, target], tmp_path)
  _one_error_line(proc, 1, "x.pth" if target != "missing_dir/x.pth" else "missing_dir")
  assert (tmp_path / "file").read_text() == "a file, not a folder"


def test_convert_names_its_pytorch_file_as_such(checkpoint, tmp_path):
  # A folder becomes a .pth file: written as out.txt it was a .pth named out.txt.
  proc = _run(["-m", "tcvc_jax.convert", checkpoint, "out.txt"], tmp_path)
  _one_error_line(proc, 2, "out.txt: a folder converts to a PyTorch file; name it .pth")
  assert not os.path.exists(tmp_path / "out.txt")
  proc = _run(["-m", "tcvc_jax.convert", checkpoint, "outdir"], tmp_path)  # a file named so
  _one_error_line(proc, 2, "outdir: a folder converts to a PyTorch file; name it .pth")
  assert not os.path.exists(tmp_path / "outdir")
  # And a PyTorch file becomes a folder: one named copy.pth was a folder named like a file.
  (tmp_path / "m.pth").write_bytes(b"checked before it is read")
  proc = _run(["-m", "tcvc_jax.convert", "m.pth", "copy.pth"], tmp_path)
  _one_error_line(proc, 2, "copy.pth: a PyTorch file converts to a checkpoint folder; name it "
                  "without an extension")
  assert not os.path.exists(tmp_path / "copy.pth")


@pytest.mark.parametrize("args,text", [
    (["-m", "tcvc_jax.colorize", "a", "b", "--checkpoint", "c", "--sizee", "3"],
     "unrecognized argument --sizee; did you mean --size?"),
    # A mistyped flag is said first, not the required one it was meant to be.
    (["-m", "tcvc_jax.colorize", "a", "b", "--chekpoint=c"],
     "unrecognized argument --chekpoint; did you mean --checkpoint?"),
    (["-m", "tcvc_jax.convert"], "the following arguments are required: src, out"),
    # A prefix of a flag is no flag: `--o` was taken for --overwrite.
    (["-m", "tcvc_jax.convert", "a.pth", "b", "--o"], "unrecognized argument --o"),
    (["-m", "tcvc_jax.colorize", "a", "b", "--checkpoint", "c", "--overwrit"],
     "unrecognized argument --overwrit; did you mean --overwrite?"),
])
def test_argparse_mistakes_are_one_line(args, text, tmp_path):
  _one_error_line(_run(args, tmp_path), 2, text)


def test_after_a_double_dash_a_name_with_dashes_is_a_files(tmp_path):
  _one_error_line(_run(["-m", "tcvc_jax.convert", "--", "--x.pth", "b"], tmp_path), 1,
                  "--x.pth: no such file or folder")


def test_a_workdir_that_is_a_file(checkpoint, frames, tmp_path):
  (tmp_path / "afile").write_text("mine")
  proc = _run([os.path.join(REPO, "train.py"), "--workdir=afile", "--config=default:tiny"],
              tmp_path)
  _one_error_line(proc, 1, "is a file, not a folder")
  proc = _run([os.path.join(REPO, "eval.py"), "--config=eval:tiny", "--workdir=afile",
               f"--config.checkpoint={checkpoint}",
               f"--config.data.root={os.path.dirname(frames)}"], tmp_path)
  _one_error_line(proc, 1, "is a file, not a folder")
  assert (tmp_path / "afile").read_text() == "mine"


def test_a_failed_run_makes_no_compilation_cache_folder(checkpoint, frames, tmp_path):
  (tmp_path / "out.mp4").write_text("mine")
  proc = _run(["-m", "tcvc_jax.colorize", frames, "out.mp4", "--checkpoint", checkpoint, "--size",
               "32", "--quiet", "--compilation-cache", "new/xla"], tmp_path)
  _one_error_line(proc, 1, "output exists")
  assert proc.stderr.startswith(f"note: compilation cache: a new folder {tmp_path}/new/xla, made "
                                "at the first compile")
  assert not os.path.exists(tmp_path / "new")  # made when JAX stores its first program
  proc = _run(["-m", "tcvc_jax.colorize", frames, "out.mp4", "--checkpoint", checkpoint, "--size",
               "32", "--quiet", "--compilation-cache", "out.mp4/xla", "--overwrite"], tmp_path)
  assert proc.returncode == 0, proc.stderr
  assert proc.stderr == (f"warning: compilation cache out.mp4/xla not usable ({tmp_path}/out.mp4 "
                         "is not a folder); compiling from scratch\n")


def test_no_tool_writes_over_what_it_reads(checkpoint, frames, tmp_path):
  """--overwrite replaces an earlier output, never the run's own input, checkpoint or another
  tool's files (eval.py into a train.py run's folder, train.py into eval.py's results or its own
  training data, also given as ~/...)."""
  shutil.copytree(frames, tmp_path / "clips" / "clip")
  shutil.copytree(checkpoint, tmp_path / "ck")
  shutil.copytree(checkpoint, tmp_path / "ck2")
  (tmp_path / "m.pth").write_bytes(b"PK not really")
  run_dir = tmp_path / "run"  # a train.py run's folder (what marks it: model.json, checkpoints/)
  (run_dir / "checkpoints").mkdir(parents=True)
  (run_dir / "model.json").write_text("{}")
  (run_dir / "config.json").write_text("the run's config")
  results = tmp_path / "results"  # an eval.py run's results
  results.mkdir()
  (results / "config.json").write_text("the evaluation's config")
  (results / "summary.json").write_text("{}")
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  colorize = ["-m", "tcvc_jax.colorize", "--size", "32", "--quiet", "--overwrite"]
  for args, text in [
      (colorize + ["clips/clip", "clips", "--checkpoint", "ck"], "output clips holds the input"),
      (colorize + ["clips/clip", "clips/clip", "--checkpoint", "ck"], "is the input"),
      (colorize + ["clips/clip", "ck", "--checkpoint", "ck"], "is the checkpoint ck"),
      (["-m", "tcvc_jax.convert", "m.pth", "m.pth", "--overwrite"], "is the source m.pth"),
      ([os.path.join(REPO, "eval.py"), "--config=eval:tiny", "--workdir=run",
        "--config.checkpoint=ck", "--config.data.root=clips", "--config.overwrite=True"],
       "run holds a config.json that no eval.py run wrote"),
      ([os.path.join(REPO, "eval.py"), "--config=eval:tiny", "--workdir=ck",
        "--config.checkpoint=ck", "--config.data.root=clips"],
       "the workdir ck is a converted checkpoint folder"),
      ([os.path.join(REPO, "eval.py"), "--config=eval:tiny", "--workdir=ck2",  # another one
        "--config.checkpoint=ck", "--config.data.root=clips", "--config.overwrite=True"],
       "the workdir ck2 is a converted checkpoint folder"),
      ([os.path.join(REPO, "train.py"), "--config=default:tiny", "--workdir=results"],
       "results holds a config.json that no train.py run wrote"),
      ([os.path.join(REPO, "train.py"), "--config=default:tiny", "--workdir=ck"],
       "ck is a converted checkpoint"),
      # Its own training data: its images/ and checkpoints/ became clips, and the data's next
      # build failed.
      ([os.path.join(REPO, "train.py"), "--config=default:tiny", "--workdir=clips",
        "--config.data.manual_dir=clips"], "clips is the folder of the training data"),
      ([os.path.join(REPO, "train.py"), "--config=default:tiny", "--workdir=clips/clip/run",
        "--config.data.manual_dir=~/" + os.path.relpath(tmp_path / "clips",
                                                        os.path.expanduser("~"))],
       "clips/clip/run is inside the folder of the training data (config.data.manual_dir="),
  ]:
    _one_error_line(_run(args, tmp_path), 1, text)
  assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
          and "cache" not in p.parts} == before


def test_eval_error_after_the_progress_bar_starts_a_line(checkpoint, tmp_path):
  """A clip's error comes after the bar has been drawn: one `error:` line of its own."""
  clip = tmp_path / "test_set" / "clip"
  clip.mkdir(parents=True)
  for i in range(3):
    png = writing.encode_png(np.full((32, 32, 3), 40 * i, np.uint8))
    if i == 2:  # its header is whole (the clips are checked by their headers before the bar)
      png = png[:41] + bytes(len(png) - 41)
    (clip / f"{i}.png").write_bytes(png)
  proc = _run([os.path.join(REPO, "eval.py"), "--config=eval:tiny", "--workdir=ev",
               f"--config.checkpoint={checkpoint}", f"--config.data.root={clip.parent}"],
              tmp_path)
  _one_error_line(proc, 1, f"cannot decode {clip / '2.png'}")
  assert "evaluating" in proc.stderr  # the bar was drawn before the error


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # importlib's, loading the config file
@pytest.mark.parametrize("value,expected", [
    ("32", 32), ("(32,64)", (32, 64)), ("[64,32]", [64, 32]), ("None", None)])
def test_train_crop_size_takes_what_the_pipeline_takes(monkeypatch, value, expected):
  """--config.data.crop_size takes n, (height, width) and None (whole frames), as the pipeline does;
  the int-typed field refused all but n."""
  from tcvc_jax import flag_parsing  # pylint: disable=g-import-not-at-top
  from tcvc_jax.training import train_config  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sys, "argv", list(sys.argv))  # the parser sets sys.argv
  parsed = flag_parsing.parse_train_flags(
      ["train.py", "--config=default:tiny", "--workdir=w", f"--config.data.crop_size={value}",
       "--config.data.rot90=False"], "usage", "")
  assert not isinstance(parsed, int), parsed
  config = parsed[0]
  assert config.data.crop_size == expected
  train_config.validate_config(config)
  if expected is not None:
    with config.unlocked():
      config.data.crop_size = (32, 44)
    with pytest.raises(ValueError, match="data.crop_size 32x44: .* multiples of 8"):
      train_config.validate_config(config)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # importlib's, loading the config file
def test_overrides_may_come_before_the_config(monkeypatch):
  """`--config.data.crop_size=32 --config default:tiny`: taken (absl refused overrides before
  --config: 'Found --config.data.crop_size=32 in argv before a value for --config ...')."""
  from tcvc_jax import flag_parsing  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(sys, "argv", list(sys.argv))  # the parser sets sys.argv
  parsed = flag_parsing.parse_train_flags(
      ["train.py", "--config.data.crop_size=32", "--workdir=w", "--config", "default:tiny",
       "--config.data.rot90=False"], "usage", "")
  assert not isinstance(parsed, int), parsed
  assert (parsed[0].data.crop_size, parsed[0].data.rot90, parsed[1]) == (32, False, "w")


def test_train_the_paper_config_without_clips(tmp_path):
  """The default config (video_frames/davis_videvo, eval.network_size a pair) passes the checks
  (it raised a TypeError); with no clip folder given, one line says so, and neither a workdir nor
  a dataset skeleton stays."""
  proc = _run([os.path.join(REPO, "train.py"), "--config=default", "--workdir=run"], tmp_path)
  _one_error_line(proc, 1, "video_frames/davis_videvo is not built in ")
  assert "manual_dir" in proc.stderr
  assert not os.path.exists(tmp_path / "run") and not os.path.exists(tmp_path / "tfds")


def test_a_path_that_starts_with_a_tilde_is_in_the_home_folder(tmp_path):
  # A shell leaves `~` alone after `--config.data.data_dir=`: the dataset was built in a folder
  # named `~` in the current folder (and `rm -rf ~` would then take the home folder for it).
  env = dict(cli_testlib.tool_env(tmp_path), HOME=str(tmp_path / "home"))
  proc = subprocess.run(
      [sys.executable, os.path.join(REPO, "train.py"), "--workdir=~/runs/a",
       "--config.data.data_dir=~/tfds", "--config.data.manual_dir=~", "--show_config"],
      capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert f"data_dir: {tmp_path}/home/tfds\n" in proc.stdout
  assert f"manual_dir: {tmp_path}/home\n" in proc.stdout
  assert "~" not in proc.stdout


def test_a_failed_run_leaves_an_existing_folder_as_it_was(tmp_path):
  # Data that fails to load left .train.lock, an empty metrics.jsonl and tensorboard/ among the
  # files of a folder of the user's.
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("mine")
  proc = _run([os.path.join(REPO, "train.py"), "--config=default:tiny", "--workdir=mine",
               "--config.data.name=video_frames", "--config.data.config=folder",
               "--config.data.manual_dir=no_such_clips"], tmp_path)
  _one_error_line(proc, 1, "no_such_clips")
  assert sorted(os.listdir(mine)) == ["notes.txt"]


def test_a_runs_files_without_checkpoints_are_not_replaced(tmp_path):
  # An old run folder whose checkpoints/ was deleted: a fresh run would have truncated its
  # metrics.jsonl and replaced its model.json.
  old = tmp_path / "old"
  old.mkdir()
  (old / "model.json").write_text('{"model": {}}')
  (old / "metrics.jsonl").write_text('{"step": 1}\n')
  proc = _run([os.path.join(REPO, "train.py"), "--config=default:tiny", "--workdir=old"], tmp_path)
  _one_error_line(proc, 1, f"{old} holds model.json and metrics.jsonl but no checkpoints/ to "
                  "resume from")
  assert sorted(os.listdir(old)) == ["metrics.jsonl", "model.json"]
  assert (old / "metrics.jsonl").read_text() == '{"step": 1}\n'
