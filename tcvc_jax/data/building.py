"""Building and opening the package's TFDS datasets (datasets.py) without TensorFlow."""

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import threading
import types
from typing import Any
import uuid

from absl import logging
import tensorflow_datasets as tfds

from tcvc_jax import atomic
from tcvc_jax import paths
from tcvc_jax.data import layout
from tcvc_jax.data import sources
from tcvc_jax.data.sources import DataError


def builder_class(name: str):
  """The builder class of dataset `name` ("synthetic_clips" or "video_frames")."""
  from tcvc_jax.data import datasets  # pylint: disable=g-import-not-at-top
  builders = {"synthetic_clips": datasets.SyntheticClips, "video_frames": datasets.VideoFrames}
  if name not in builders:
    raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(builders))}")
  return builders[name]


def check_config(name: str, config: Any) -> None:
  """Raises DataError unless `config` names a config of dataset `name` (None: its default;
  a `tfds.core.BuilderConfig` is taken as it is)."""
  cls = builder_class(name)
  if config is None or not isinstance(config, str):
    return
  names = [c.name for c in cls.BUILDER_CONFIGS]
  if config not in names:
    raise DataError(f"unknown config {config!r} of dataset {name}; its configs: "
                    f"{', '.join(names)}")


def _is_ours(name: str) -> bool:
  """Whether `name` is one of the package's builders; importing them registers them with TFDS."""
  try:
    builder_class(name)
  except DataError:
    return False
  return True


def _register(name: str) -> None:
  """Imports the package's builders so TFDS knows them by name (other names are TFDS's own)."""
  _is_ours(name)


def _local(path) -> bool:
  return "://" not in os.fspath(path)


class _PartialBuild(atomic.NewFolder):
  """Undoes a dataset build that fails or is interrupted, as an `atomic` output: `discard()`
  (which `atomic.discard_all` calls too) leaves what was there before, `keep()` the new dataset.

  TFDS writes into `<config>/incomplete.*_<version>/` and renames it at the end; around it, it makes
  `<dataset>/.config/` and `<data_dir>/downloads/`. A dataset being replaced is moved aside first
  (`set_aside`), and is back in place after a discard.
  """

  def __init__(self, data_path):
    self._version_dir = os.path.abspath(os.fspath(data_path))
    config_dir = os.path.dirname(self._version_dir)
    dataset_dir = os.path.dirname(config_dir)
    self._made = [p for p in (os.path.join(dataset_dir, ".config"),
                              os.path.join(os.path.dirname(dataset_dir), "downloads"))
                  if not os.path.lexists(p)]
    record = os.path.join(dataset_dir, ".config", "metadata.json")
    self._record = (record, _read_bytes(record))
    self._before = set(os.listdir(config_dir)) if os.path.isdir(config_dir) else set()
    self._aside = None
    self._lock = threading.Lock()
    super().__init__(config_dir)

  def set_aside(self) -> None:
    """Moves the prepared dataset out of the way: deleted by `keep()`, put back by `discard()`."""
    aside = os.path.join(self.path, f".{os.path.basename(self._version_dir)}.replaced-"
                                    f"{uuid.uuid4().hex[:8]}")
    self._before.add(os.path.basename(aside))
    os.rename(self._version_dir, aside)
    self._aside = aside

  def keep(self) -> None:
    super().keep()
    aside, self._aside = self._aside, None
    if aside is not None:
      atomic.remove(aside)

  def discard(self) -> None:
    with self._lock:
      if self._done:
        return
      try:
        if os.path.isdir(self.path):
          for entry in set(os.listdir(self.path)) - self._before:  # incomplete.*_<version>
            atomic.remove(os.path.join(self.path, entry))
        if self._aside is not None:
          atomic.remove(self._version_dir)  # a new dataset not kept
          os.rename(self._aside, self._version_dir)
        for path in self._made:
          atomic.remove(path)
        path, data = self._record
        if data is not None and _read_bytes(path) != data:
          with open(path, "wb") as f:
            f.write(data)
      finally:
        self._aside = None  # if it could not go back, it stays where it is, never deleted
        super().discard()


def _recover_killed_build(data_path) -> None:
  """What a build killed at once (kill -9, out of memory: no `discard`) left beside the dataset:
  TFDS's `incomplete.*` folders are removed, and a dataset set aside for a rebuild is put back
  where no new one took its place (removed where one did). Runs holding the "build" lock only."""
  version_dir = os.path.abspath(os.fspath(data_path))
  config_dir, version = os.path.split(version_dir)
  try:
    entries = sorted(os.listdir(config_dir))
  except OSError:
    return
  aside = [e for e in entries if e.startswith(f".{version}.replaced-")]
  aside.sort(key=lambda e: os.path.getmtime(os.path.join(config_dir, e)))
  if aside and not os.path.exists(version_dir):
    os.rename(os.path.join(config_dir, aside.pop()), version_dir)
    logging.warning("%s: put back the dataset that a rebuild killed before its end had set aside",
                    version_dir)
  for entry in aside + [e for e in entries if e.startswith("incomplete.")]:
    logging.warning("%s: removing %s, left by a build killed before its end", config_dir, entry)
    atomic.remove(os.path.join(config_dir, entry))


def _read_bytes(path: str) -> bytes | None:
  try:
    with open(path, "rb") as f:
      return f.read()
  except OSError:
    return None


def _built_from(data_path) -> dict[str, Any] | None:
  """The `source` a prepared dataset records (`video_frames`), or None."""
  try:
    metadata = json.loads((data_path / "metadata.json").read_text())
  except (OSError, ValueError):
    return None
  source = metadata.get("source") if isinstance(metadata, dict) else None
  return source if isinstance(source, dict) else None


def _why_rebuild(builder, manual_dir) -> str | None:
  """Why a prepared dataset does not hold the clips of `manual_dir` (None if it does)."""
  path = os.path.abspath(os.fspath(manual_dir))
  source = _built_from(builder.data_path)
  if source is None:
    return "it does not record the folder it was built from (an older build)"
  if os.path.realpath(source.get("manual_dir") or "") != os.path.realpath(path):  # (links too)
    return f"it was built from {source.get('manual_dir')}, not {path}"
  if not os.path.isdir(path):
    logging.warning("%s: the clip folder %s is gone; using the dataset built from it in %s",
                    builder.name, path, builder.data_path)
    return None
  try:
    now = layout.fingerprint(path)
  except (DataError, OSError) as e:
    return f"{path} cannot be listed as before ({e})"
  if now["rules"] != source.get("rules", 1):
    return ("it was built by an earlier version's rules (splits/val.txt is now the validation "
            "split, JPEGs are read upright and decoded to OpenCV's pixels)")
  if now["digest"] != source.get("digest"):
    then, now = (f"{f.get('clips')} clips, {f.get('files')} files" for f in (source, now))
    return (f"the clips in {path} changed since it was built ("
            + (f"{then} then, {now} now)" if then != now else
               "a file was replaced, renamed or modified)"))
  return None


# Runs on one machine that share a data_dir (a sweep started at once) take turns at building a
# dataset, and none rebuilds a dataset that another is training on. Two lock files per dataset,
# kept in the user's cache folder and named by a digest of the dataset's path (not in data_dir: a
# build that fails leaves it as it was): "build", held while a run checks and builds the dataset,
# and "use", held shared by every run that reads it and exclusively by one that replaces it. The
# system drops them when a process ends, however it ends; a process keeps its "use" lock until
# then. A file system without locks runs unlocked. Runs on other machines (a data_dir on a
# network drive) are not covered.
_LOCKS = threading.RLock()  # one build at a time in a process: its flock locks are its own
_LOCK_FILES = {}  # lock file path -> its open file, one per process


def _lock_file(data_path, kind: str):
  """The open lock file `kind` ("build" / "use") of the dataset at `data_path` (None: unlocked)."""
  where = os.path.realpath(data_path) if _local(data_path) else os.fspath(data_path)
  digest = hashlib.sha256(os.fspath(where).encode("utf-8", "surrogateescape")).hexdigest()[:32]
  path = paths.user_cache_dir("dataset_locks", f"{digest}.{kind}")
  if path not in _LOCK_FILES:
    try:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      _LOCK_FILES[path] = open(path, "a+")  # pylint: disable=consider-using-with
    except OSError as e:
      logging.info("dataset lock %s not usable (%s): unlocked", path, e)
      _LOCK_FILES[path] = None
  return _LOCK_FILES[path]


def _flock(f, how: int) -> bool:
  """Takes or changes a lock; False where `how` has LOCK_NB and another process holds it."""
  if f is None:
    return True
  try:
    fcntl.flock(f, how)
  except BlockingIOError:
    return False
  except OSError:
    pass  # no locks on this file system
  return True


@contextlib.contextmanager
def _build_turn(data_path, full_name):
  """Holds the dataset's "build" lock, waiting (with a warning) while another run builds it."""
  f = _lock_file(data_path, "build")
  if not _flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB):
    logging.warning("%s: another run is building or checking it in %s; waiting for it", full_name,
                    data_path)
    _flock(f, fcntl.LOCK_EX)
  try:
    yield
  finally:
    _flock(f, fcntl.LOCK_UN)


def build(name: str, data_dir: str | None, *, config: Any = None, manual_dir: str | None = None,
          overwrite: bool = False):
  """Builds (if not built yet) a dataset as ArrayRecord, without TensorFlow.

  The `tfds build` CLI imports TensorFlow at start-up in tensorflow-datasets 4.9.10; this is the
  TensorFlow-free way to build.

  A dataset built from a folder of clips (`video_frames`) records the folder's absolute path and a
  fingerprint of its listing (`fingerprint`); given a `manual_dir`, it is reused only if both still
  match, and rebuilt otherwise, with a warning saying why. Without a `manual_dir`, a prepared
  dataset is reused as it is. A build that fails or is interrupted (`atomic.discard_all`) leaves
  `data_dir` as it was, an earlier dataset of the same config included.

  Processes of one machine that build the same dataset take turns (the later ones wait, then reuse
  it), and a dataset that another process is reading (it built or reused it) is not rebuilt: a
  DataError says so. The process keeps the dataset from being rebuilt by others until it ends.

  Args:
    name: builder folder name, e.g. "synthetic_clips" or "video_frames".
    data_dir: where the prepared dataset goes.
    config: builder config name or `tfds.core.BuilderConfig` (the default config if None).
    manual_dir: folder with the source clips (`video_frames`).
    overwrite: rebuild even if prepared.

  Returns:
    The prepared `tfds.core.DatasetBuilder`.

  Raises:
    DataError: an unknown dataset or config, a missing or empty `manual_dir`, no clip to build,
      a rebuild of a dataset another process reads.
  """
  cls = builder_class(name)
  check_config(name, config)
  make = lambda: cls(config=config, data_dir=data_dir, file_format="array_record")
  builder = make()
  full_name = f"{name}/{builder.builder_config.name}"
  with _LOCKS, _build_turn(builder.data_path, full_name):
    return _build_in_turn(make, full_name, manual_dir, overwrite)


class _NeverRaised(Exception):
  """Stands for TensorFlow's ResourceExhaustedError, which local files never raise."""


# The calls TFDS's shuffler makes of TensorFlow (tensorflow-datasets 4.9.10, core/shuffle.py), for
# local files.
_LOCAL_FILES_TF = types.SimpleNamespace(
    io=types.SimpleNamespace(gfile=types.SimpleNamespace(
        GFile=lambda path, mode: open(os.fspath(path), mode),  # pylint: disable=unspecified-encoding
        exists=lambda path: os.path.exists(os.fspath(path)),
        remove=lambda path: os.remove(os.fspath(path)))),
    errors=types.SimpleNamespace(ResourceExhaustedError=_NeverRaised))


@contextlib.contextmanager
def _spill_without_tensorflow():
  """TFDS holds a split's records in memory up to 1 GB, then writes them to files beside the
  dataset and reads them back in order, through TensorFlow's file functions; without TensorFlow
  (not a dependency here) a split over 1 GB failed with "No module named 'tensorflow'". Where
  TensorFlow is not installed, the shuffler gets the same functions for local files while this
  process builds."""
  from tensorflow_datasets.core import shuffle  # pylint: disable=g-import-not-at-top
  if importlib.util.find_spec("tensorflow") is not None or not hasattr(shuffle, "tf"):
    yield
    return
  before = shuffle.tf  # (one build at a time in a process: _LOCKS)
  shuffle.tf = _LOCAL_FILES_TF
  try:
    yield
  finally:
    shuffle.tf = before


def _build_in_turn(make, full_name, manual_dir, overwrite):
  """`build`, holding the dataset's "build" lock; returns the builder holding its "use" lock."""
  builder = make()  # (another run may have built the dataset while this one waited)
  if _local(builder.data_path):
    _recover_killed_build(builder.data_path)
    builder = make()
  uses_clip_folder = bool(getattr(type(builder), "MANUAL_DOWNLOAD_INSTRUCTIONS", None))
  use = _lock_file(builder.data_path, "use")
  prepared = builder.data_path.exists()
  why = None
  if prepared and not overwrite:
    why = _why_rebuild(builder, manual_dir) if uses_clip_folder and manual_dir else None
    if why is None:
      logging.info("reusing %s in %s", full_name, builder.data_path)
      skipped = [f"{n} ({r})" for rows in
                 ((builder.info.metadata or {}).get("skipped") or {}).values() for n, r in rows]
      if skipped:  # (said at its build too; a later run would not know)
        logging.warning("%s: %d clip(s) were skipped when it was built: %s", full_name,
                        len(skipped), "; ".join(skipped[:3]) + ("; ..." * (len(skipped) > 3)))
      _flock(use, fcntl.LOCK_SH)  # never waits: only a run holding the "build" lock replaces it
      return builder
  if uses_clip_folder:
    if manual_dir is None:
      raise DataError(f"{full_name} is not built in {builder.data_dir_root}; "
                      "give the folder of clips to build it from (manual_dir; train.py and "
                      "eval.py: --config.data.manual_dir=DIR)")
    layout.discover(os.fspath(manual_dir))  # a missing or empty folder: one line, before TFDS
  if not _flock(use, fcntl.LOCK_EX | fcntl.LOCK_NB):
    raise DataError(f"{full_name} in {builder.data_dir_root} is in use by another run; this run "
                    f"would {'rebuild' if prepared else 'build'} it ("
                    + (why or ("a rebuild was asked for" if prepared else "it is gone"))
                    + "): wait for that run to "
                    "end, or give this run a data dir of its own (train.py and eval.py: "
                    "--config.data.data_dir=DIR)")
  if why is not None:  # (said once the new folder is known to hold clips)
    logging.warning("%s: rebuilding the dataset in %s: %s", full_name, builder.data_path, why)
  partial = _PartialBuild(builder.data_path) if _local(builder.data_path) else None
  try:
    if prepared:
      try:
        if partial is not None:
          partial.set_aside()
        else:
          builder.data_path.rmtree()
      except OSError as e:  # a read-only data dir (a shared copy)
        raise DataError(f"{full_name} in {builder.data_dir_root} cannot be rebuilt "
                        f"({why or 'a rebuild was asked for'}): {e.strerror or e}; give this run a "
                        "data dir it can write (--config.data.data_dir=DIR)") from e
      builder = make()  # not the one that read the old dataset's info
    with _spill_without_tensorflow():
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=manual_dir,
          download_mode=tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS))
  except BaseException:
    if partial is not None:
      partial.discard()
    _flock(use, fcntl.LOCK_UN)
    raise
  if partial is not None:
    partial.keep()
  _flock(use, fcntl.LOCK_SH)
  return builder


def _prepared(name: str, data_dir: str | None, config: str | None):
  """The builder of a prepared dataset (never builds it: TFDS would, with its own messages)."""
  _register(name)
  full_name = f"{name}/{config}" if config else name
  try:
    builder = tfds.builder(full_name, data_dir=data_dir)
  except Exception:  # tfds raises many types; an unknown config of ours is told plainly
    if _is_ours(name):
      check_config(name, config)
    raise
  if not builder.data_path.exists():
    raise DataError(f"{full_name} is not built in {builder.data_dir_root}")
  return builder


def split_names(name: str, data_dir: str | None, *, config: str | None = None) -> list[str]:
  """The splits of a prepared dataset."""
  return list(_prepared(name, data_dir, config).info.splits)


def open_split(name: str, split: str, data_dir: str | None, *, config: str | None = None):
  """Opens a prepared split for random access.

  Args:
    name: dataset name.
    split: split name ("train", "validation", "test", ...). A slice such as "train[:10]"
      works too; its index is then built by reading the clips.
    data_dir: TFDS data dir.
    config: builder config name.

  Returns:
    `(source, ClipIndex)`.

  Raises:
    DataError: the dataset is not built, or has no such split.
  """
  builder = _prepared(name, data_dir, config)
  full_name = f"{name}/{config}" if config else name
  splits = list(builder.info.splits)
  if split.split("[", 1)[0] not in splits:
    raise DataError(f"{full_name} in {builder.data_dir_root} has no split {split!r}; its splits: "
                    f"{', '.join(splits)}")
  source = builder.as_data_source(split=split)
  index = sources.index_from_metadata(source.dataset_info.metadata, split)
  if index is None or index.total_records != len(source):
    logging.info("%s[%s]: no clip index in the metadata, reading the clips", full_name, split)
    index = sources.scan_index(source)
  return source, index

