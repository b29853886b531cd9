"""Temporary outputs that a killed run left: their names say whose they are, so that the next run
writing the same output can remove those of processes that no longer exist (`tcvc_jax.atomic`)."""

import hashlib
import logging
import os
import re
import shutil
import socket
import uuid


def _host_tag():
  """This host and PID namespace (containers that share a host name and a folder have their own
  process numbers: one must not take the other's live process for a dead one)."""
  try:
    space = os.readlink("/proc/self/ns/pid")
  except OSError:
    space = ""
  return hashlib.sha1(f"{socket.gethostname()} {space}".encode()).hexdigest()[:6]


_HOST = _host_tag()


def remove_stale(folder, base):
  """Removes the temporary outputs of `base` that a killed process of this host left (kill -9, a
  power cut: no handler ran), before a new one is written. Another host's, a live process's and
  a half-swapped old folder (`.old`: the user's earlier output) are left alone."""
  pattern = re.compile(rf"\.{re.escape(base)}\.tmp-{_HOST}-(\d+)-[0-9a-f]{{8}}(\.\w+)?")
  try:
    names = os.listdir(folder or ".")
  except OSError:
    return
  for name in names:
    match = pattern.fullmatch(name)
    if not match or name.endswith(".old") or _alive(int(match.group(1))):
      continue
    try:
      path = os.path.join(folder, name)
      if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
      else:
        os.remove(path)
      logging.info("removed %s, left by a process that was killed", name)
    except OSError:
      pass


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (OSError, OverflowError):  # another user's process; no pid of this system: not ours
    return True
  return True


def temporary_name(base, suffix=""):
  """`.BASE.tmp-HOST-PID-RANDOM[SUFFIX]`: a hidden name beside the output `base`."""
  return f".{base}.tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}"
