"""Device mesh, shardings and host-local -> global arrays for data-parallel training.

The mesh has one `data` axis over every device of every process. The batch is split along its
leading axis; the train state is replicated. Each process loads its own slice of the global batch
and `global_batch` stitches the slices into one global array.
"""

import errno
import hashlib
import os
import socket
import sys
import threading
import time
from typing import Any
from typing import Callable
from typing import Sequence
from typing import TypeVar

from absl import logging
import jax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from tcvc_jax import cli

T = TypeVar("T")
_AXIS_TYPES = {"explicit": jax.sharding.AxisType.Explicit, "auto": jax.sharding.AxisType.Auto}


_JOB_ENV = (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID"))


def initialize_distributed(**kwargs) -> None:
  """Starts `jax.distributed` on a multi-host job; a no-op when no cluster is detected.

  Must run before anything touches a JAX backend. On Cloud TPU, SLURM or Open MPI, JAX finds the
  coordinator and the process ids by itself; elsewhere set JAX_COORDINATOR_ADDRESS (host:port of
  process 0), JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process.

  Args:
    **kwargs: passed to `jax.distributed.initialize` (coordinator_address, num_processes,
      process_id, ...), e.g. for a local multi-process test.

  Raises:
    ValueError: a job that is asked for (kwargs, or JAX_* variables) but cannot start: a job of one
      process per host, training side by side, is not what was asked for.
  """
  if jax.distributed.is_initialized():
    return  # joined by an earlier run in this process
  asked = dict(kwargs)
  if not kwargs:
    for key, name in _JOB_ENV:
      if os.environ.get(name, "").strip():
        try:
          asked[key] = int(os.environ[name])
        except ValueError:
          raise ValueError(f"{name} must be a whole number, got {os.environ[name]!r}") from None
  address = (asked.get("coordinator_address")
             or os.environ.get("JAX_COORDINATOR_ADDRESS", "").strip())
  _check_job_size(asked.get("num_processes"), asked.get("process_id"))
  lost_process_timeout()  # a bad value is found before the job waits for this process
  if asked.get("process_id") == 0:
    _check_coordinator_port(address)
  # Ours ends the wait with a message before jax.distributed's own deadline aborts the process
  # (a check failure that blames "another task died").
  timeout = int(asked.pop("initialization_timeout", _JOIN_TIMEOUT_S))
  joined = threading.Event()
  threading.Thread(target=_watch_join, args=(joined, timeout, address, asked), daemon=True,
                   name="tcvc-join-watch").start()
  try:
    jax.distributed.initialize(**asked, initialization_timeout=timeout + _JAX_GRACE_S)
  except RuntimeError as e:  # JAX ran already in this process (a second run in a notebook)
    if asked or address:
      raise
    logging.info("single-host run (JAX already in use in this process: %s)", e)
  except ValueError as e:  # "coordinator_address should be defined": a single-host run.
    if asked or os.environ.get("JAX_COORDINATOR_ADDRESS"):
      raise ValueError(f"the multi-host job cannot start: {e} (outside Cloud TPU, SLURM and Open "
                       "MPI, set JAX_COORDINATOR_ADDRESS=host:port of process 0, "
                       "JAX_NUM_PROCESSES and JAX_PROCESS_ID on every process)") from None
    logging.info("single-host run (jax.distributed not initialised: %s)", e)
  finally:
    joined.set()


_JOIN_TIMEOUT_S = 300  # how long a process waits for the whole job to join (jax's default)
_JAX_GRACE_S = 30  # jax.distributed's own deadline comes this much later
_JOIN_NOTES_S = (10, 60)  # a note on stderr after the first, then every second, seconds of waiting


_LOST_AFTER_ENV = "TCVC_LOST_PROCESS_TIMEOUT"
_LOST_AFTER_S = 30.0


def lost_process_timeout() -> float:
  """Seconds without a sign of life from a process of the job before the others take it for gone
  (stopping.FailureWatch): $TCVC_LOST_PROCESS_TIMEOUT, else 30 (JAX's heartbeat timeout: 100)."""
  text = os.environ.get(_LOST_AFTER_ENV, "").strip()
  if not text:
    return _LOST_AFTER_S
  try:
    value = float(text)
  except ValueError:
    value = float("nan")
  if not value >= 1:  # (nan too)
    raise cli.UsageError(f"{_LOST_AFTER_ENV} must be a number of seconds, at least 1, got {text!r}")
  return value


def _check_job_size(num_processes, process_id) -> None:
  """Raises ValueError for a job size or process id that cannot join (jax.distributed waited its
  whole timeout, then aborted the process)."""
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"JAX_NUM_PROCESSES (num_processes) must be at least 1, got {num_processes}")
  if process_id is not None and (process_id < 0 or (num_processes is not None
                                                     and process_id >= num_processes)):
    limit = f"0..{num_processes - 1}" if num_processes is not None else "0 or more"
    raise ValueError(f"JAX_PROCESS_ID (process_id) must be in {limit}, got {process_id}: each "
                     "process of a job of N processes has its own id from 0 to N-1")


def _watch_join(joined: threading.Event, timeout: int, address: str, asked: dict) -> None:
  """Says on stderr that the process waits for the job's other processes, and ends it with one
  error line after `timeout` seconds, unless `joined` is set first."""
  start, note = time.monotonic(), _JOIN_NOTES_S[0]
  where = f"at {address}" if address else "(coordinator found by JAX)"
  while not joined.wait(0.5):
    waited = time.monotonic() - start
    if waited >= timeout:
      n, pid = asked.get("num_processes"), asked.get("process_id")
      who = "this process" if pid is None else f"process {pid}"
      cli.fail_now(
          f"the multi-host job did not start: {who} waited {timeout} s {where} for the other "
          f"processes of the job{'' if n is None else f' ({n} in all)'} to join: is every "
          "process started, with the same JAX_COORDINATOR_ADDRESS and JAX_NUM_PROCESSES, its own "
          "JAX_PROCESS_ID, and can it reach process 0's host and port?")
    if waited >= note:
      print(f"waiting for the other processes of the job to join {where}: {waited:.0f} s "
            f"(gives up after {timeout} s)", file=sys.stderr, flush=True)
      note += _JOIN_NOTES_S[1]


def _check_coordinator_port(address: str) -> None:
  """Raises ValueError when process 0 cannot serve the coordinator on its address's port.

  jax.distributed's coordinator crashed the process (a segmentation fault, no message) when the
  port was taken, e.g. by an earlier job still running on the host.
  """
  _, _, port = (address or "").rpartition(":")
  if not port.isdigit() or int(port) > 65535:
    return  # jax.distributed names a malformed address itself
  for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "")):
    try:  # as the coordinator binds: every interface (dual-stack where IPv6 is there)
      with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a finished job's TIME_WAIT
        s.bind((host, int(port)))
      return
    except OSError as e:
      if e.errno in (errno.EADDRINUSE, errno.EACCES):
        why = "is in use on this host" if e.errno == errno.EADDRINUSE else "needs privileges here"
        raise ValueError(f"the multi-host job cannot start: port {port} of the coordinator "
                         f"address {address} {why} (process 0 serves the coordinator there): "
                         "choose another port, or stop the process that holds it (another "
                         "process 0? each process needs its own JAX_PROCESS_ID)") from None
      # no IPv6 on this host: try IPv4; nothing to bind at all: leave it to jax.distributed


# Config keys each host may set its own way: where its files are, its input threads, its logs.
_HOST_KEYS = ("data.data_dir", "data.manual_dir", "data.num_workers", "data.read_threads",
              "compilation_cache", "log.")


def check_same_config(config: dict[str, Any]) -> None:
  """Raises ValueError on every process of a job whose processes were given different configs.

  Each process trains with its own config: one started with another value (a typo in one host's
  command) would run the job in lockstep with two learning rates, silently. Keys of a host's own
  resources (`_HOST_KEYS`: data_dir, input threads, ...) may differ. Every process must call it at
  the same point.
  """
  if jax.process_count() == 1:
    return
  flat = sorted((k, v) for k, v in _flat(config) if not k.startswith(_HOST_KEYS))
  digest = lambda text: np.frombuffer(hashlib.sha256(text.encode()).digest()[:8], np.uint8)
  head = np.concatenate([digest(repr(flat)), np.frombuffer(np.int64(len(flat)).tobytes(),
                                                           np.uint8)])
  heads = np.asarray(multihost_utils.process_allgather(head))
  others = [i for i in range(len(heads)) if (heads[i] != heads[0]).any()]
  if not others:
    return
  keys = "the keys they have (another preset?)"
  if (heads[:, 8:] == heads[0, 8:]).all():  # as many keys: which values differ
    rows = np.asarray(multihost_utils.process_allgather(  # [processes, keys, 8]
        np.stack([digest(f"{k}={v}") for k, v in flat])))
    differ = (rows != rows[0]).any(axis=(0, 2))
    keys = ", ".join(f"{k} (here {v})" for (k, v), d in zip(flat, differ, strict=True) if d)
  raise ValueError(f"the processes of this job were given different configs: process(es) "
                   f"{', '.join(map(str, others))} differ from process 0 in {keys}; start every "
                   "process with the same command")


def _flat(tree, prefix=""):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _flat(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}", repr(value)


def fill_mesh_shape(axes: Sequence[tuple[str, int]], num_devices: int) -> tuple[int, ...]:
  """Sizes of the mesh axes with the one -1 replaced so that they multiply to `num_devices`."""
  sizes = [int(s) for _, s in axes]
  unknown = [i for i, s in enumerate(sizes) if s == -1]
  if len(unknown) > 1:
    raise cli.UsageError(f"at most one mesh axis may be -1, got {list(axes)}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if unknown:
    if num_devices % known:
      raise cli.UsageError(f"mesh {list(axes)} does not divide {num_devices} devices")
    sizes[unknown[0]] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise cli.UsageError(f"mesh {list(axes)} has {int(np.prod(sizes))} devices, "
                     f"but there are {num_devices}")
  return tuple(sizes)


def create_mesh(axes: Sequence[tuple[str, int]] = (("data", -1),), axis_type: str = "explicit",
                devices: Sequence[Any] | None = None) -> jax.sharding.Mesh:
  """The device mesh.

  Args:
    axes: (name, size) pairs; one size may be -1 (all remaining devices). Our mesh is
      `(("data", -1),)`.
    axis_type: "explicit" or "auto" (`jax.sharding.AxisType`), the same for every axis.
    devices: devices to use (default: all devices of all processes).

  Returns:
    A `jax.sharding.Mesh`.
  """
  if axis_type not in _AXIS_TYPES:
    raise cli.UsageError(f"axis_type must be one of {sorted(_AXIS_TYPES)}, got {axis_type!r}")
  names = tuple(str(name) for name, _ in axes)
  types = (_AXIS_TYPES[axis_type],) * len(names)
  shape = fill_mesh_shape(axes, jax.device_count() if devices is None else len(devices))
  idle = [f"{n} ({k})" for n, k in zip(names, shape, strict=True) if n != "data" and k > 1]
  if idle:  # (the state is replicated, the batch split over "data" alone)
    logging.warning("mesh axes %s hold copies of the same work: the batch is split over 'data' "
                    "alone; give it every device, (('data', -1),)", ", ".join(idle))
  if devices is None:
    return jax.make_mesh(shape, names, axis_types=types)
  return jax.sharding.Mesh(np.asarray(devices).reshape(shape), names, axis_types=types)


def data_sharding(mesh: jax.sharding.Mesh) -> NamedSharding:
  """Batch sharding: the leading axis split over the `data` axis."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh: jax.sharding.Mesh) -> NamedSharding:
  """The same value on every device."""
  return NamedSharding(mesh, P())


def state_shardings(abstract_state: Any, mesh: jax.sharding.Mesh) -> Any:
  """Shardings for a train state (replicated: TCVC's nets are small enough for data parallelism)."""
  return jax.tree_util.tree_map(lambda _: replicated(mesh), abstract_state)


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs of `abstract` carrying `shardings` (targets for a sharded restore)."""
  return jax.tree_util.tree_map(
      lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def check_batch_size(global_batch_size: int, mesh: jax.sharding.Mesh) -> None:
  """Raises unless the global batch splits evenly over the data axis and the processes."""
  data = mesh.shape["data"]
  if global_batch_size % data:
    raise cli.UsageError(f"global batch size {global_batch_size} is not divisible by the {data} "
                     "devices of the data axis")
  if global_batch_size % jax.process_count():
    raise cli.UsageError(f"global batch size {global_batch_size} is not divisible by "
                     f"{jax.process_count()} processes")


def global_batch(local_batch: Any, sharding: NamedSharding) -> Any:
  """This process's slice of the batch (NumPy, leading axis) -> global arrays, for every leaf."""
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch)


def global_from_host(value: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global array from a host value that every process holds in full (e.g. loaded weights)."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def local_copy(tree: Any, device: Any = None) -> Any:
  """Replicated global arrays -> arrays on one device of this process (default: the first)."""
  device = device or jax.local_devices()[0]
  return jax.tree_util.tree_map(lambda x: jax.device_put(x.addressable_data(0), device), tree)


def local_mesh(device: Any = None) -> jax.sharding.Mesh:
  """A 1-device mesh on this process's first device, for per-host computations."""
  device = device or jax.local_devices()[0]
  return jax.sharding.Mesh(np.asarray([device]), ("data",))


def all_processes(flag: bool) -> bool:
  """Whether `flag` holds on every process (each process calls it; `flag` itself on one)."""
  if jax.process_count() == 1:
    return bool(flag)
  return bool(np.all(multihost_utils.process_allgather(np.array([bool(flag)], np.int32))))


class JobError(RuntimeError):
  """Another process of this job failed; this one stops too (the message says which and why)."""


_MESSAGE_BYTES = 1024  # of each process's error message, shared in `agree`


def agree(what: str, fn: Callable[[], T]) -> T:
  """`fn()` on every process of the job, then an agreement on how it went.

  Work that one process can fail alone (its own disk: a dataset or weights it lacks, a file it
  cannot write) is run through here before the next collective: if `fn` raised on any process,
  every process raises at once (the failed ones their own error, the others a `JobError` naming the
  first failed process and its message) instead of waiting for it at the next collective until
  the job's heartbeat times out (minutes). Every process must call it at the same point.

  Args:
    what: what `fn` does, for the message ("opening the dataset").
    fn: the work; its result is returned.
  """
  if jax.process_count() == 1:
    return fn()
  error = None
  try:
    result = fn()
  except Exception as e:  # pylint: disable=broad-except  # re-raised below, after the agreement
    error, result = e, None
  row = np.zeros(_MESSAGE_BYTES, np.uint8)
  if error is not None:
    text = cli.one_line(error).encode()
    text = text[:_MESSAGE_BYTES - 1]
    row[0] = 1
    row[1:1 + len(text)] = np.frombuffer(text, np.uint8)
  rows = np.asarray(multihost_utils.process_allgather(row))
  if error is not None:
    raise error
  failed = [i for i in range(rows.shape[0]) if rows[i, 0]]
  if failed:
    message = bytes(rows[failed[0], 1:]).rstrip(b"\0").decode(errors="ignore")
    more = f" (and {len(failed) - 1} more processes)" if len(failed) > 1 else ""
    raise JobError(f"process {failed[0]} of this job failed while {what}{more}: {message}")
  return result
