"""Atomic outputs: every file or folder the package writes appears whole or not at all.

`AtomicOutput(path)` gives a temporary path beside `path` (same folder, so the final rename is
atomic); `commit()` moves it onto `path`, `discard()` deletes it. Used as a context manager it
commits on success and discards on any exception, KeyboardInterrupt included. An existing `path` is
replaced only with `overwrite=True`; an old folder is swapped out first and deleted after the new
one is in place.

A tool names its finished output with `watch(path)`; `was_committed(path)` then tells whether that
output is in place, and `commits_held()` keeps every commit out while an interrupt handler decides
(an output is either in place or not started, never half swapped).

Permissions are those a plain `open()` / `os.mkdir()` would give under the user's umask (files
0o666, folders 0o777, minus the umask), unlike `tempfile.mkstemp` / `mkdtemp` (0o600 / 0o700).
"""

import contextlib
import json
import os
import shutil
import stat
import threading
import uuid

from tcvc_jax import leftovers

# Unfinished outputs of this process, removed by `discard_all` when a tool is interrupted.
_LIVE = {}
_LIVE_LOCK = threading.Lock()
# Held while an output is moved into place. `_WATCHED`: the outputs a tool calls finished;
# `_COMMITTED`: those of them in place.
_COMMIT_LOCK = threading.RLock()
_WATCHED = set()
_COMMITTED = set()


class OutputExistsError(FileExistsError):
  """The output exists and overwriting was not asked for."""


class NotReplaceableError(OutputExistsError):
  """The output exists, and `--overwrite` may not replace it: it is not an earlier output of that
  kind (a folder of the user's where a file or a folder of frames is to go)."""


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def default_mode(directory: bool = False) -> int:
  """The mode `open()` (0o666) or `os.mkdir()` (0o777) gives a new path under the current umask."""
  return (0o777 if directory else 0o666) & ~_umask()


def _written_path(path) -> str:
  """Absolute `path`, or where it is a link to a file, that file (written through the link)."""
  path = os.path.abspath(os.fspath(path))
  return os.path.realpath(path) if os.path.islink(path) and os.path.isfile(path) else path


def check_target(path, overwrite: bool = False) -> str:
  """Absolute `path` after checking that its folder exists and that it may be written.

  A link to a file is written through, as `cp` does: with `overwrite`, the path returned is the
  file it names, which is replaced, and the link stays. A link to a folder, or to nothing, is
  itself replaced: never the folder it names.

  Raises:
    FileNotFoundError: the parent folder does not exist.
    OutputExistsError: `path` exists and `overwrite` is False.
    NotReplaceableError: with `overwrite`, `path` is a device, pipe or socket, or a link to one.
  """
  path = _written_path(path) if overwrite else os.path.abspath(os.fspath(path))
  if overwrite and os.path.exists(path):
    mode = os.stat(path).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
      kind = ("device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
              "named pipe" if stat.S_ISFIFO(mode) else "socket")
      raise NotReplaceableError(f"{path} is a {kind}, not a file: --overwrite never replaces it; "
                                "choose another output")
  parent = os.path.dirname(path)
  if os.path.exists(parent) and not os.path.isdir(parent):
    raise NotADirectoryError(f"cannot write {path}: {parent} is not a folder")
  if not os.path.isdir(parent):
    raise FileNotFoundError(f"cannot write {path}: its folder {parent} does not exist")
  if os.path.lexists(path) and not overwrite:
    raise OutputExistsError(f"output exists: {path} (--overwrite, or overwrite=True in Python, "
                            "replaces it)")
  return path


# Files a file manager puts into folders it shows: not the user's, not a reason to keep a folder.
FILE_MANAGER_FILES = (".DS_Store", "Thumbs.db", "desktop.ini", "._.DS_Store")


class OutputIsInputError(ValueError):
  """Writing the output would replace or remove one of the run's inputs."""


def is_within(path, folder) -> bool:
  """Whether `path` is `folder` or lies inside it (links resolved; hard links of a file too)."""
  path, folder = os.fspath(path), os.fspath(folder)
  real, top = os.path.realpath(path), os.path.realpath(folder)
  if real == top or real.startswith(top.rstrip(os.sep) + os.sep):
    return True
  try:
    return os.path.samefile(path, folder)
  except OSError:
    return False


def check_keeps_inputs(output, inputs) -> None:
  """Raises OutputIsInputError when writing `output` (a file, or a folder replaced whole) would
  replace or remove one of `inputs`: the same file or folder, or a folder that holds it.

  `--overwrite` replaces an earlier output; it never means "replace what this run reads" (a
  colorized video written over its source, a checkpoint folder over the .pth it came from).

  Args:
    output: the output path.
    inputs: (description, path) pairs; paths that are None or do not exist are skipped.
  """
  if not os.path.lexists(os.fspath(output)):
    return
  for what, path in inputs:
    if path is not None and os.path.lexists(os.fspath(path)) and is_within(path, output):
      held = "is" if is_within(output, path) else "holds"
      raise OutputIsInputError(f"the output {os.fspath(output)} {held} {what} "
                               f"{os.fspath(path)}: writing there would destroy it; choose another "
                               "output")


def check_apart(output, source, what="the source") -> None:
  """Raises OutputIsInputError when `output` is `source`, holds it, or would replace or add a file
  inside the folder `source` (a checkpoint folder: its files, or its subfolders'); a new file at
  the folder's top (`runs/demo/model.pth`) leaves the checkpoint as it was."""
  if source is None or not os.path.lexists(os.fspath(source)):
    return
  check_keeps_inputs(output, [(what, source)])
  out = os.path.abspath(os.fspath(output))
  if not os.path.isdir(os.fspath(source)) or not is_within(os.path.dirname(out), source):
    return
  if os.path.lexists(out) or not os.path.samefile(os.path.dirname(out), source):
    raise OutputIsInputError(f"the output {os.fspath(output)} is inside {what} "
                             f"{os.fspath(source)}: writing there would change it; choose an "
                             "output outside it")


def check_replaceable_folder(path, suffixes, what) -> None:
  """Raises NotReplaceableError unless an existing `path` (an output that `--overwrite` replaces
  whole) is a folder holding only files named *suffixes*: an earlier output of `what`, not a folder
  of the user's that happens to share the name (its other files would be deleted with it)."""
  path = os.fspath(path)
  if not os.path.lexists(path):
    return
  if not os.path.isdir(path) or os.path.islink(path):
    raise NotReplaceableError(f"{path} exists and is not a folder of {what}; --overwrite replaces "
                              "only such a folder: choose another output")
  others = sorted(n for n in os.listdir(path) if n not in FILE_MANAGER_FILES and (
      not n.lower().endswith(tuple(suffixes)) or not os.path.isfile(os.path.join(path, n))))
  if others:
    raise NotReplaceableError(f"{path} holds more than {what} ({', '.join(others[:3])}"
                              f"{', ...' if len(others) > 3 else ''}); --overwrite replaces only a "
                              "folder of them: choose another output")


def remove(path: str) -> None:
  """Removes a file, link or folder (if there)."""
  if os.path.isdir(path) and not os.path.islink(path):
    # Renamed first: an interrupt handler removes a folder the work may still be writing into, and
    # a file it adds after the rename fails instead of keeping a half-removed folder alive.
    gone = f"{path}.removing-{uuid.uuid4().hex[:8]}"
    try:
      os.rename(path, gone)
      path = gone
    except OSError:
      pass
    shutil.rmtree(path, ignore_errors=True)
  elif os.path.lexists(path):
    os.remove(path)


class AtomicOutput:
  """A temporary file or folder that becomes `path` on `commit()`.

  Attributes:
    path: the final absolute path.
    tmp: the temporary path to write (a file created empty, or a folder), in the same folder.
  """

  def __init__(self, path, *, directory: bool = False, overwrite: bool = False, suffix: str = "",
               create_parents: bool = False):
    if create_parents:
      os.makedirs(os.path.dirname(os.path.abspath(os.fspath(path))), exist_ok=True)
    self.path = check_target(path, overwrite)
    if (not directory and os.path.isdir(self.path) and not os.path.islink(self.path)
        and os.listdir(self.path)):
      raise NotReplaceableError(f"{self.path} is a folder with files in it; --overwrite replaces a "
                                "file, never such a folder: choose another output")
    self.overwrite = overwrite
    self.directory = directory
    base = os.path.basename(self.path)
    leftovers.remove_stale(os.path.dirname(self.path), base)
    self.tmp = os.path.join(os.path.dirname(self.path), leftovers.temporary_name(base, suffix))
    if directory:
      os.mkdir(self.tmp)  # 0o777 minus the umask
    else:
      os.close(os.open(self.tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    self._done = False
    with _LIVE_LOCK:
      _LIVE[id(self)] = self

  def _forget(self) -> None:
    with _LIVE_LOCK:
      _LIVE.pop(id(self), None)

  def commit(self) -> str:
    """Moves the finished temporary output onto `path`; returns `path`."""
    if self._done:
      return self.path
    old = None
    with _COMMIT_LOCK:
      try:
        if os.path.lexists(self.path):
          if not self.overwrite:
            raise OutputExistsError(f"output exists: {self.path} (--overwrite, or overwrite=True "
                                    "in Python, replaces it)")
          if os.path.isdir(self.path) and not os.path.islink(self.path):
            old = f"{self.tmp}.old"
            os.rename(self.path, old)
            os.rename(self.tmp, self.path)
        if old is None:
          os.replace(self.tmp, self.path)
      except BaseException:
        if old is not None and os.path.lexists(old) and not os.path.lexists(self.path):
          os.rename(old, self.path)  # the user's old output back where it was
        self.discard()
        raise
      self._done = True
      if self.path in _WATCHED:
        _COMMITTED.add(self.path)
    self._forget()
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
    return self.path

  def discard(self) -> None:
    """Deletes the temporary output (nothing happens to `path`)."""
    if not self._done:
      self._done = True
      self._forget()
      remove(self.tmp)

  def __enter__(self) -> "AtomicOutput":
    return self

  def __exit__(self, exc_type, exc, tb) -> bool:
    if exc_type is None:
      self.commit()
    else:
      self.discard()
    return False


def highest_missing(path):
  """The highest of the absolute `path` and its parents that does not exist; None if it exists."""
  top = None
  while not os.path.lexists(path):
    top, path = path, os.path.dirname(path)
  return top


class NewFolder:
  """A folder a run creates (with any missing parents), removed again unless `keep()` is called.

  What a run that fails, or is interrupted (`discard_all`), before it has anything worth keeping
  leaves is what was there before it: nothing where the folder was new, an empty folder where it
  was empty. A folder that held anything is never removed; of what is in it, only the entries
  named in `own_names` that were not there before go (the run's own files).

  Raises:
    NotADirectoryError: `path` or one of its parents is a file.
  """

  def __init__(self, path, own_names=()):
    self.path = os.path.abspath(os.fspath(path))
    top = highest_missing(self.path)  # the highest folder this creates
    p = self.path if top is None else os.path.dirname(top)
    if not os.path.isdir(p):
      raise NotADirectoryError(f"cannot make the folder {self.path}: {p} is a file")
    before = set(os.listdir(self.path)) if top is None else set()
    self._was_empty = top is None and not before
    self._added = set(own_names) - before
    os.makedirs(self.path, exist_ok=True)
    self._top = top
    self._done = False
    with _LIVE_LOCK:
      _LIVE[id(self)] = self

  def keep(self) -> None:
    """The folder and what is in it stay, whatever happens next."""
    self._done = True
    with _LIVE_LOCK:
      _LIVE.pop(id(self), None)

  def discard(self) -> None:
    """Undoes the folder: removes it if this created it, empties it if it was empty."""
    if self._done:
      return
    self.keep()
    if self._top is not None:
      remove(self._top)
    elif os.path.isdir(self.path):
      for name in os.listdir(self.path):
        if self._was_empty or name in self._added:
          remove(os.path.join(self.path, name))


def discard_all() -> None:
  """Removes every unfinished output of this process (for interrupt handlers)."""
  with _LIVE_LOCK:
    live = list(_LIVE.values())
  for out in live:
    try:
      out.discard()
    except OSError:
      pass


def watch(path) -> None:
  """Names `path` as a finished output of this process: `was_committed(path)` reports it."""
  with _COMMIT_LOCK:
    _WATCHED.add(_written_path(path))


def was_committed(path) -> bool:
  """Whether the watched output `path` has been put in place by this process."""
  with _COMMIT_LOCK:
    return _written_path(path) in _COMMITTED


@contextlib.contextmanager
def commits_held():
  """No output is put in place inside this block (one being moved finishes first)."""
  with _COMMIT_LOCK:
    yield


def write_bytes(path, data: bytes, *, overwrite: bool = False) -> str:
  """Writes `data` to `path` atomically; returns the absolute path."""
  with AtomicOutput(path, overwrite=overwrite) as out:
    with open(out.tmp, "wb") as f:
      f.write(data)
  return out.path


def write_text(path, text: str, *, overwrite: bool = False) -> str:
  """Writes UTF-8 `text` to `path` atomically."""
  return write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


def write_json(path, obj, *, overwrite: bool = False, indent: int = 1) -> str:
  """Writes `obj` as JSON to `path` atomically."""
  return write_text(path, json.dumps(obj, indent=indent) + "\n", overwrite=overwrite)
