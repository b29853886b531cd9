"""What the four command-line tools share: exit codes, one-line errors and prompt interrupts.

Exit codes (train.py, eval.py, `python -m tcvc_jax.colorize`, `python -m tcvc_jax.convert`):
  0    success (train.py: also after SIGINT / SIGTERM once the checkpoint is saved);
  1    an error: one line on stderr ("error: ..."), a traceback only with --verbose;
  2    a command-line usage error (unknown flag, missing argument);
  130  interrupted (SIGINT / SIGTERM) before anything was finished: partial outputs are removed.
       A signal that comes once the tool's output is in place (only the report and the exit are
       left) is ignored: exit 0 with the whole output, never 130 beside a finished file.

`run(fn)` first makes glibc keep freed memory for reuse unless the tool's calls are small
(`allocator`; `TCVC_MALLOC=reuse|system` forces either), then runs the tool's work in a worker
thread, so that the main thread sees a signal at once, even while XLA compiles for a minute in C++
(a Python signal handler would only run after that).
On a signal it removes every unfinished `tcvc_jax.atomic` output and ends the process at once
(`os._exit`), which also avoids the crash of tearing down a runtime in the middle of a compile.
"""

import argparse
import contextlib
import difflib
import functools
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback

from tcvc_jax import allocator
from tcvc_jax import atomic

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES_HELP = ("exit codes: 0 success, 1 error (one line; --verbose for the traceback), "
                   "2 usage error, 130 interrupted (no partial output left)")


class ArgumentParser(argparse.ArgumentParser):
  """argparse with the tools' convention: a usage mistake is one line and exit code 2. A flag must
  be spelt out: argparse's default takes a prefix (`--o` ran as `--overwrite`)."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, allow_abbrev=False, **kwargs)

  def error(self, message):
    flag = re.fullmatch(r"argument (--[\w-]+)(?:/[^:]*)?: expected one argument", message)
    argv = getattr(self, "_argv", [])
    pairs = zip(argv[:-1], argv[1:], strict=True)
    if flag and any(a == flag.group(1) and b.startswith("-") for a, b in pairs):
      # `--reference -1:a.png`: argparse takes a value that starts with '-' for a flag
      message += f" (one that starts with '-' is given as {flag.group(1)}=VALUE)"
    print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
    sys.exit(EXIT_USAGE)

  def parse_known_args(self, args=None, namespace=None):
    self._argv = [str(a) for a in (sys.argv[1:] if args is None else args)]  # for `error`
    self._check_flag_names()
    ns, rest = super().parse_known_args(args, namespace)
    for key, value in vars(ns).items():  # `--checkpoint=~/ck`: a shell leaves that `~` alone
      if isinstance(value, str) and (value == "~" or value.startswith("~/")):
        setattr(ns, key, os.path.expanduser(value))
    return ns, rest


  def _check_flag_names(self):
    """A mistyped flag is the first thing said, with the closest one (argparse said first that a
    required flag was missing, where `--chekpoint` was given for `--checkpoint`)."""
    known = sorted(s for a in self._actions for s in a.option_strings if s.startswith("--"))
    for token in self._argv:
      if token == "--":
        break
      name = token.split("=", 1)[0]
      if name.startswith("--") and name not in known:
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        self.error(f"unrecognized argument {name}"
                   + (f"; did you mean {close[0]}?" if close else ""))


class UserError(Exception):
  """A problem the user can fix; the message is the whole story."""


class UsageError(ValueError):
  """A bad option or config value (a network size, a batch that does not fit the devices): the
  tools exit with 2."""
  usage_mistake = True


class UsageMistake(UserError):
  """A mistake in the command line that the parser cannot see (an option that does not fit the
  arguments): exit code 2, like the parser's own."""
  usage_mistake = True


def one_line(err: BaseException) -> str:
  """The message of an exception on one line (its type name when it has none)."""
  text = " ".join(str(err).split())
  if isinstance(err, KeyError) and text.startswith("'"):
    text = text.strip("'")
  return text or type(err).__name__


def _end_bar_lines() -> None:
  """Ends the line of a progress bar still drawn on stderr, so that a message starts a line of its
  own (a bar draws with a carriage return and no newline until it is closed)."""
  tqdm = sys.modules.get("tqdm")
  bars = list(getattr(getattr(tqdm, "tqdm", None), "_instances", ()))
  if any(not getattr(b, "disable", True) for b in bars):
    sys.stderr.write("\n")


def _end_now(message, code) -> None:
  """Removes the unfinished outputs, prints `message` (or what a callable gives) on its own line
  and ends the process with `code` at once."""
  atomic.discard_all()
  _end_bar_lines()
  if callable(message):
    try:
      message = message()
    except Exception:  # pylint: disable=broad-except  # never a traceback on the way out
      message = "interrupted"
  print(message, file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(code)  # pylint: disable=protected-access


def _interrupted(message) -> None:
  _end_now(message, EXIT_INTERRUPTED)


def fail_now(message: str) -> None:
  """Ends the process at once, from any thread, with `error: message` and exit 1, removing its
  unfinished outputs: for a process whose main thread cannot be reached (in a multi-host job, it
  waits in a collective for a process that failed)."""
  _end_now(f"error: {message}", EXIT_ERROR)


@contextlib.contextmanager
def _signals_to(handler):
  """SIGINT and SIGTERM go to `handler` inside the block; the previous handlers are back after."""
  previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for s, h in previous.items():
      signal.signal(s, h)


# Set by `run` once its work has ended without a signal: the outputs are complete.
_WORK_DONE = {"done": False}


def _before_or_after_run(signum, frame):
  del signum, frame
  if not _WORK_DONE["done"]:  # after the work, the tool only reports and exits: let it
    _interrupted("interrupted")


def ends_on_interrupt(main):
  """Decorates a tool's `main`: while it runs, a SIGINT / SIGTERM before `run` (while it imports
  JAX, parses flags, reads its config) ends the process at once with exit code 130 and one line,
  instead of a KeyboardInterrupt traceback from the middle of an import; `run` handles the signals
  while the work runs, and once the work has ended a signal is ignored (its outputs are complete).
  The previous handlers are back once `main` returns.
  """

  @functools.wraps(main)
  def wrapped(*args, **kwargs):
    if threading.current_thread() is not threading.main_thread():
      return main(*args, **kwargs)  # signal handlers can only be set from the main thread
    _WORK_DONE["done"] = False
    with _signals_to(_before_or_after_run):
      return main(*args, **kwargs)

  return wrapped


def _late_callback(unraisable) -> bool:
  """Whether an unraisable error is a TensorStore read finishing after its asyncio loop closed.

  When one read of a checkpoint fails (a damaged file), Orbax's restore ends and closes its event
  loop while TensorStore still finishes the other reads; each then reports to the closed loop, and
  Python printed a traceback per read (hundreds, around the one-line error or warning).
  """
  err = unraisable.exc_value
  if not (isinstance(err, RuntimeError) and str(err) == "Event loop is closed"):
    return False
  frames = traceback.extract_tb(unraisable.exc_traceback)
  return bool(frames) and frames[0].name == "call_soon_threadsafe" and (
      os.path.basename(frames[0].filename) == "base_events.py")


class _LogLines(logging.Handler):
  """Log records as `warning: ...` lines (like the tools' `error: ...`; with --verbose, as
  `WARNING:logger:...`), printed above any progress bar instead of into its line."""

  def __init__(self, verbose):
    super().__init__()
    self.verbose = verbose

  def emit(self, record):
    try:
      text = record.getMessage()
      text = (f"{record.levelname}:{record.name}:{text}" if self.verbose
              else f"{record.levelname.lower()}: {text}")
      tqdm = sys.modules.get("tqdm")
      if tqdm is not None and getattr(tqdm.tqdm, "_instances", None):
        tqdm.tqdm.write(text, file=sys.stderr)
      else:
        print(text, file=sys.stderr, flush=True)
    except Exception:  # pylint: disable=broad-except
      self.handleError(record)


def _log_lines(verbose: bool) -> None:
  """Puts `_LogLines` in place of the plain stderr handler that importing orbax / JAX installs on
  the root logger (`logging.basicConfig`'s: `WARNING:absl:...`, drawn into a bar's line)."""
  root = logging.getLogger()
  for h in list(root.handlers):
    if isinstance(h, _LogLines) or (type(h) is logging.StreamHandler  # pylint: disable=unidiomatic-typecheck
                                    and h.stream in (sys.stderr, sys.__stderr__)):
      root.removeHandler(h)
  root.addHandler(_LogLines(verbose))


def _quiet_late_callbacks() -> None:
  """Drops `_late_callback`s; every other unraisable error is printed as before."""
  previous = sys.unraisablehook
  if getattr(previous, "tcvc_quiet", False):
    return

  def hook(unraisable):
    if not _late_callback(unraisable):
      previous(unraisable)

  hook.tcvc_quiet = True
  sys.unraisablehook = hook


def run(fn, verbose: bool = False, on_signal=None, final_output=None,
        pixels_per_call=None, interrupted_message="interrupted; no output written") -> int:
  """Runs `fn()` (returning an exit code) with the exit-code and error conventions above.

  Args:
    fn: the tool's work.
    verbose: print tracebacks of errors.
    on_signal: optional callable run at the first SIGINT / SIGTERM; if it returns True the work is
      left to finish by itself (train.py saves a checkpoint and returns); a second signal, or a
      False return, interrupts at once.
    final_output: optional path of the tool's finished output (written through `tcvc_jax.atomic`);
      once it is in place, signals are ignored and the work is left to report and return.
    pixels_per_call: the input pixels of the work's largest compiled call, where known: small
      jobs keep glibc's default allocator (`allocator.keep_freed_memory`).
    interrupted_message: the line printed when a signal stops the work at once (or a callable
      that returns it then).

  Returns:
    The exit code.
  """
  try:  # before the first computation, so that XLA's threads reuse their freed buffers
    allocator.keep_freed_memory(pixels_per_call)
  except ValueError as e:
    print(f"error: {one_line(e)}", file=sys.stderr, flush=True)
    return EXIT_USAGE
  _quiet_late_callbacks()
  _log_lines(verbose)
  outcome = {}

  def work():
    try:
      outcome["code"] = fn()
    except BaseException as e:  # pylint: disable=broad-except
      outcome["error"] = e
      outcome["traceback"] = traceback.format_exc()

  signals = {"count": 0, "stop": False}

  # The handler only records the signal; the loop below acts on it. (It used to raise
  # KeyboardInterrupt, which lands in whatever Python code the main thread runs at that moment:
  # inside a gc callback, such as JAX's, the interpreter prints and drops it, and the signal was
  # lost: a Ctrl-C during compilation that never stopped the run.)
  def handler(signum, frame):
    del frame
    now = time.monotonic()
    if signals["count"] == 1 and now - signals.get("first", 0) < 0.25 and not signals["stop"]:
      return  # the same signal twice at once (`timeout` sends it to the process and its group)
    signals["count"] += 1
    signals.setdefault("first", now)
    if signals["count"] == 1 and on_signal is not None and on_signal(signum):
      _end_bar_lines()  # else the bar's next redraw, on the same line, hides the message
      print("stopping after the current step (signal again to stop at once)", file=sys.stderr,
            flush=True)
      return
    signals["stop"] = True

  if final_output is not None:
    atomic.watch(final_output)
  thread = threading.Thread(target=work, name="tcvc-main", daemon=True)
  with _signals_to(handler):
    thread.start()
    while thread.is_alive():
      thread.join(0.1)
      if signals["stop"]:
        with atomic.commits_held():  # the output is either in place or not started
          if final_output is None or not atomic.was_committed(final_output):
            _interrupted(interrupted_message)
        signals["stop"] = False  # too late to stop: the output is whole; let the work report
    _WORK_DONE["done"] = True
  if "error" in outcome:
    err = outcome["error"]
    if isinstance(err, KeyboardInterrupt):
      _interrupted(interrupted_message)
    if isinstance(err, SystemExit):
      return int(err.code or 0) if isinstance(err.code, int) or err.code is None else EXIT_ERROR
    _end_bar_lines()
    if verbose:
      print(outcome["traceback"], file=sys.stderr, end="")
    text = one_line(err)
    if "Out of memory" in text:  # XLA: "Out of memory allocating 28605211048 bytes."
      text += ("; the work needs more memory than the machine has (the model needs less at a "
               "smaller network size: --size, protocol.network_size, data.crop_size, or batch)")
    print(f"error: {text}", file=sys.stderr, flush=True)
    # A flag's value that only the input or checkpoint shows to be impossible: a usage mistake.
    return EXIT_USAGE if getattr(err, "usage_mistake", False) else EXIT_ERROR
  return int(outcome.get("code") or 0)


def exit(code: int) -> None:  # pylint: disable=redefined-builtin
  """Ends a tool's process with `code` at once, once its output is flushed.

  The work is complete and every file closed; skipping the interpreter's teardown (JAX's runtime,
  thread pools) makes the exit immediate, so a late Ctrl-C cannot kill a finished run mid-teardown.
  """
  for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, signal.SIG_IGN)
  jax = sys.modules.get("jax")
  if jax is not None and jax.process_count() > 1:
    jax.distributed.shutdown()  # leave a multi-host job in order (the other hosts wait for it)
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(int(code or 0))  # pylint: disable=protected-access
