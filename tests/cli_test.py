"""How the tools stop: a signal at any moment exits 130 at once with one line, nothing left behind.

Also what cli.run prints as the work ends: after an open progress bar, around late callbacks.
Mistakes on the command line, file modes: cli_usage_test.
"""

import asyncio
import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tcvc_jax import cli
from tcvc_jax import guidance

import cli_testlib

# The shared fixtures (pytest finds them by name in this module).
from cli_testlib import checkpoint  # noqa: F401
from cli_testlib import frames  # noqa: F401
import train_testlib

REPO = cli_testlib.REPO
_env = cli_testlib.tool_env
_run = cli_testlib.run_tool


def _interrupt(cmd, tmp_path, delay, sig=signal.SIGINT):
  proc = subprocess.Popen([sys.executable, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=_env(tmp_path), cwd=str(tmp_path))
  time.sleep(delay)
  sent = time.perf_counter()
  proc.send_signal(sig)
  out, err = proc.communicate(timeout=120)
  return proc.returncode, time.perf_counter() - sent, out, err


def _leftovers(folder):
  return [n for n in os.listdir(folder) if n.startswith(".") and "tmp" in n]


@pytest.mark.parametrize("delay", [3.0, 6.0])
def test_colorize_interrupt_at_any_moment(checkpoint, frames, tmp_path, delay):
  cmd = ["-m", "tcvc_jax.colorize", frames, "out.mp4", "--checkpoint", checkpoint, "--size", "32",
         "--quiet", "--compilation-cache", "off"]
  rc, after, _, err = _interrupt(cmd, tmp_path, delay)
  if rc == 0:  # finished before the signal: a whole output
    assert os.path.isfile(tmp_path / "out.mp4")
    return
  assert rc == 130, err[-2000:]
  assert after < 15, f"took {after:.1f} s to stop"
  assert "Segmentation" not in err and "Traceback" not in err
  assert not os.path.exists(tmp_path / "out.mp4") and not _leftovers(tmp_path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_train_interrupt_while_it_starts(tmp_path, sig):
  """A signal while train.py imports JAX and reads its config: exit 130, one line, no traceback."""
  cmd = [os.path.join(REPO, "train.py"), "--config=default:tiny", "--workdir=a",
         "--config.data.data_dir=" + str(tmp_path / "tfds"), "--compilation_cache=off"]
  rc, after, _, err = _interrupt(cmd, tmp_path, 1.0, sig)
  assert rc == 130, err[-3000:]
  assert after < 5, f"took {after:.1f} s to stop"
  assert "Traceback" not in err and err.strip().splitlines()[-1] == "interrupted"
  assert not os.path.exists(tmp_path / "a")


def test_a_signal_after_the_work_has_ended_is_ignored(tmp_path):
  """Between `run` returning (outputs complete) and the exit, a signal changes nothing."""
  script = """
import os, signal, sys, time
from tcvc_jax import cli
@cli.ends_on_interrupt
def main():
  code = cli.run(lambda: 0)
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(0.5)  # the handler runs here
  print("finished")
  return code
cli.exit(main())
"""
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                        env=_env(tmp_path), timeout=120, check=False)
  assert proc.returncode == 0 and proc.stdout.strip() == "finished", proc.stderr[-2000:]


_SIGNAL_NEAR_THE_OUTPUT = """
import os, signal, sys, time
from tcvc_jax import atomic, cli
def work():
  with atomic.AtomicOutput("out.bin") as out:
    with open(out.tmp, "wb") as f:
      f.write(b"whole")
    if sys.argv[1] == "before":
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(5)
  if sys.argv[1] == "after":
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
  print("reported")
  return 0
cli.exit(cli.ends_on_interrupt(lambda: cli.run(work, final_output="out.bin"))())
"""


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_signal_next_to_the_final_output(tmp_path, when):
  """Before the output is in place: exit 130, nothing left. After (only the report is left to do):
  the signal is ignored, exit 0 with the whole output, never 130 beside a finished file."""
  proc = _run(["-c", _SIGNAL_NEAR_THE_OUTPUT, when], tmp_path, timeout=120)
  if when == "before":
    assert proc.returncode == 130 and "reported" not in proc.stdout, proc.stderr[-2000:]
    assert not (tmp_path / "out.bin").exists() and not _leftovers(tmp_path)
  else:
    assert proc.returncode == 0 and proc.stdout.strip() == "reported", proc.stderr[-2000:]
    assert (tmp_path / "out.bin").read_bytes() == b"whole" and not _leftovers(tmp_path)


_OPEN_BAR = """
import os, signal, sys, time
import tqdm
from tcvc_jax import cli
def work():
  bar = tqdm.tqdm(total=10, desc="working", file=sys.stderr)  # drawn, never closed
  bar.update(3)
  if sys.argv[1] == "signal":
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
  if sys.argv[1] in ("graceful", "twice at once"):  # train.py's: asked to stop, it finishes
    os.kill(os.getpid(), signal.SIGINT)
    if sys.argv[1] == "twice at once":  # as `timeout -s INT` sends it: to the process and group
      time.sleep(0.05)  # (not at the same instant: Python would run the handler once for both)
      os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)
    bar.update(1)  # the bar goes on drawing after the message
    bar.close()
    return 0
  raise ValueError("boom")
graceful = lambda signum: sys.argv[1] in ("graceful", "twice at once")
cli.exit(cli.ends_on_interrupt(lambda: cli.run(work, on_signal=graceful))())
"""


@pytest.mark.parametrize("how,code,line", [
    ("signal", 130, "interrupted; no output written"), ("error", 1, "error: boom"),
    ("graceful", 0, "stopping after the current step (signal again to stop at once)"),
    ("twice at once", 0, "stopping after the current step (signal again to stop at once)")])
def test_a_message_after_an_open_progress_bar_starts_a_line(tmp_path, how, code, line):
  proc = _run(["-c", _OPEN_BAR, how], tmp_path, timeout=120)
  assert proc.returncode == code, proc.stderr[-2000:]
  lines = proc.stderr.splitlines()
  assert "working" in proc.stderr and line in lines, proc.stderr[-2000:]
  if how not in ("graceful", "twice at once"):
    assert lines[-1] == line


# A tool whose work would take 60 s; the main thread is made to collect garbage on every
# allocation, and its gc callback sends SIGINT once and keeps running Python code, so that the
# signal handler runs inside the callback (as it did inside JAX's _xla_gc_callback during a
# compile, where the interpreter dropped the KeyboardInterrupt it raised and the run went on).
_SIGNAL_IN_GC_CALLBACK = """
import gc, os, signal, sys, threading, time
from tcvc_jax import cli
sent = []
def callback(phase, info):
  if (phase == "start" and not sent and threading.current_thread() is threading.main_thread()
      and signal.getsignal(signal.SIGINT) is not signal.default_int_handler):  # cli.run's
    sent.append(time.perf_counter())
    print("SIGINT sent from a gc callback", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGINT)
    for _ in range(100000):
      pass
gc.callbacks.append(callback)
# A collection in the main thread while cli.run waits there. Its wait loop allocates nothing that
# would start one (with gc.set_threshold(1) the collections could all fall in the worker thread,
# and the signal was never sent), so a timer's signal handler, which runs in the main thread,
# collects.
signal.signal(signal.SIGALRM, lambda *_: gc.collect())
signal.setitimer(signal.ITIMER_REAL, 0.5, 0.5)
def work():
  time.sleep(60)
  print("finished")
  return 0
sys.exit(cli.run(work))
"""


def test_a_signal_during_a_gc_callback_still_interrupts(tmp_path):
  t0 = time.perf_counter()
  proc = _run(["-c", _SIGNAL_IN_GC_CALLBACK], tmp_path, timeout=120)
  assert proc.returncode == 130, (proc.returncode, proc.stderr[-2000:])
  assert "finished" not in proc.stdout and "interrupted" in proc.stderr
  assert "SIGINT sent from a gc callback" in proc.stderr  # the case at hand
  assert time.perf_counter() - t0 < 30


def test_train_interrupt_during_compile_and_during_training(tmp_path):
  # During the first step's compilation nothing is lost: exit 130 at once.
  base = [os.path.join(REPO, "train.py"), "--config=default:tiny",
          "--config.data.data_dir=" + str(tmp_path / "tfds")]
  rc, after, _, err = _interrupt(base + ["--compilation_cache=off", "--workdir=a",
                                         "--config.num_train_steps=100000"], tmp_path, 4.0)
  assert rc == 130, err[-3000:]
  assert after < 15 and "Segmentation" not in err
  assert not os.path.exists(tmp_path / "a")  # "no output written": no workdir skeleton either
  # Once steps run, SIGTERM saves a checkpoint and exits 0. This run compiles the tiny train step
  # into the session's cache, where install_test and train_faults_test find it.
  cmd = base + ["--compilation_cache=" + train_testlib.session_compilation_cache(), "--workdir=b",
                "--config.num_train_steps=100000", "--config.checkpoint_every_steps=100000"]
  proc = subprocess.Popen([sys.executable, *cmd], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=_env(tmp_path), cwd=str(tmp_path))
  deadline = time.time() + 240
  metrics = tmp_path / "b" / "metrics.jsonl"
  while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert "stopped by a signal" in out
  assert os.listdir(tmp_path / "b" / "checkpoints")
  # No progress bar in this preset (as on pods): a line per logging interval instead of nothing.
  assert re.search(r"^step \d+/100000: loss \S+, \S+ steps/s$", err, re.M), err[-3000:]


def test_train_interrupted_before_its_first_step_in_a_folder_of_the_users(tmp_path):
  # The run's files (model.json, config.json, checkpoints/, metrics.jsonl, tensorboard/, the lock)
  # go again; the user's stay.
  mine = tmp_path / "mine"
  mine.mkdir()
  (mine / "notes.txt").write_text("mine")
  cmd = [os.path.join(REPO, "train.py"), "--config=default:tiny", "--workdir=mine",
         "--config.data.data_dir=" + str(tmp_path / "tfds"), "--compilation_cache=off"]
  proc = subprocess.Popen([sys.executable, *cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=_env(tmp_path), cwd=str(tmp_path))
  deadline = time.time() + 240
  while time.time() < deadline and not (mine / "config.json").exists():
    time.sleep(0.05)
  assert (mine / "model.json").exists()  # the run has written its files: the step compiles
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-3000:]
  assert sorted(os.listdir(mine)) == ["notes.txt"]


@pytest.mark.parametrize("delay", [1.0, 4.0])
def test_eval_and_convert_interrupts(checkpoint, frames, tmp_path, delay):
  cmd = [os.path.join(REPO, "eval.py"), "--config=eval:tiny", "--workdir=ev",
         "--compilation_cache=off", f"--config.checkpoint={checkpoint}",
         f"--config.data.root={os.path.dirname(frames)}"]
  rc, after, _, err = _interrupt(cmd, tmp_path, delay)
  assert rc in (0, 130), err[-2000:]
  assert after < 15 and "Traceback" not in err and "Segmentation" not in err
  if rc == 130:
    assert not os.path.exists(tmp_path / "ev" / "summary.json")
    for folder in (tmp_path / "ev", tmp_path / "ev" / "frames"):
      assert not folder.exists() or not _leftovers(folder)
  rc, after, _, err = _interrupt(["-m", "tcvc_jax.convert", checkpoint, "back.pth"], tmp_path,
                                 delay / 2)
  assert rc in (0, 130) and after < 15 and "Traceback" not in err, err[-2000:]
  assert os.path.isfile(tmp_path / "back.pth") == (rc == 0) and not _leftovers(tmp_path)


def test_late_tensorstore_callbacks_print_nothing(monkeypatch):
  """A damaged checkpoint's other reads report to Orbax's closed loop: hundreds of tracebacks were
  printed around the one-line error; only those are dropped."""
  loop = asyncio.new_event_loop()
  loop.close()
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)

  class Failing:

    def __del__(self):
      raise ValueError

  Failing()
  hook_args = type(seen[0])  # sys.UnraisableHookArgs, which sys does not name
  monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)  # Python's own printer
  cli._quiet_late_callbacks()  # pylint: disable=protected-access
  stderr = io.StringIO()
  with contextlib.redirect_stderr(stderr):
    # (call, frames to skip): the test's and the lambda's, so that the traceback starts in the
    # call the C extension made, as it does when TensorStore reports.
    for bad, skip in ((lambda: loop.call_soon_threadsafe(print), 2), (lambda: 1 / 0, 1)):
      try:
        bad()
      except Exception as e:  # pylint: disable=broad-exception-caught
        tb = e.__traceback__
        for _ in range(skip):
          tb = tb.tb_next
        sys.unraisablehook(hook_args((type(e), e, tb, None, None)))
  assert "Event loop is closed" not in stderr.getvalue()
  assert "ZeroDivisionError" in stderr.getvalue()


def test_tools_read_a_tilde_path_as_the_home_folder(monkeypatch):
  # `colorize in.mp4 out.mp4 --checkpoint=~/ck`: a shell leaves `~` after `=` alone.
  monkeypatch.setenv("HOME", "/home/someone")
  parser = cli.ArgumentParser()
  parser.add_argument("input")
  parser.add_argument("--checkpoint")
  parser.add_argument("--reference")
  args = parser.parse_args(["~/in.mp4", "--checkpoint=~/ck", "--reference=0:~/a.png"])
  assert (args.input, args.checkpoint) == ("/home/someone/in.mp4", "/home/someone/ck")
  assert args.reference == "0:~/a.png"  # not a path as a whole: guidance reads its path part
  assert guidance.parse_reference(args.reference) == (0, "/home/someone/a.png")


def test_a_flag_value_that_starts_with_a_dash_says_how_to_give_it(capsys):
  parser = cli.ArgumentParser(prog="tool")
  parser.add_argument("--reference")
  for argv, hint in ((["--reference", "-1:a.png"], True), (["--reference"], False)):
    with pytest.raises(SystemExit) as e:
      parser.parse_args(argv)
    assert e.value.code == cli.EXIT_USAGE
    assert capsys.readouterr().err == (
        "error: argument --reference: expected one argument"
        + (" (one that starts with '-' is given as --reference=VALUE)" if hint else "")
        + " (see tool --help)\n")
  assert parser.parse_args(["--reference=-1:a.png"]).reference == "-1:a.png"


def test_out_of_memory_says_what_to_lower(capsys):
  def work():
    raise RuntimeError("INTERNAL: Error dispatching computation: Out of memory allocating "
                       "28605211048 bytes.")

  assert cli.run(work) == cli.EXIT_ERROR
  err = capsys.readouterr().err
  assert err.startswith("error: INTERNAL: Error dispatching computation: Out of memory allocating "
                        "28605211048 bytes.; the work needs more memory than the machine has "
                        "(the model needs less at a smaller network size: --size")
  assert err.count("\n") == 1
