"""XLA flags of the test session and of the processes its tests start.

The suite's time is mostly XLA compiling small programs, and most of that is LLVM optimizing the
kernels XLA generates for its fusions. The tests have them compiled at LLVM's optimization level 0
(`--xla_backend_optimization_level=0`): the same programs (XLA's own passes, which decide what is
computed and how it is fused, do not depend on it), about twice as fast to compile, slower to run
where a test runs long (matrix products and convolutions are library calls at either level);
results differ from XLA's default level by rounding at most. Every process of the session uses the
same flags, so that the programs one compiles are read from the session's compilation cache by the
next. `TCVC_TEST_XLA_OPT_LEVEL=default` runs the suite as the tools run (XLA's default level),
`=0` .. `=3` at that level. A test whose time is mostly running (the demo's 300 training steps)
asks for the default level for its process.
"""

import os

OPT_LEVEL_VAR = "TCVC_TEST_XLA_OPT_LEVEL"
_LEVELS = ("default", "0", "1", "2", "3")


def _opt_level_flags(level=None):
  level = level or os.environ.get(OPT_LEVEL_VAR, "0").strip() or "0"
  if level not in _LEVELS:
    raise ValueError(f"{OPT_LEVEL_VAR}={level!r}: use one of {', '.join(_LEVELS)}")
  return [] if level == "default" else [f"--xla_backend_optimization_level={level}"]


def flags(devices=1, opt_level=None):
  """XLA_FLAGS for a process of this session with `devices` fake CPU devices (`opt_level`: one of
  'default', '0' .. '3' instead of the session's)."""
  out = _opt_level_flags(opt_level)
  if devices > 1:
    out.append(f"--xla_force_host_platform_device_count={devices}")
  return " ".join(out)


def child_env(devices=1, drop_prefixes=(), opt_level=None):
  """A copy of os.environ for a process a test starts: this session's XLA_FLAGS for `devices` CPU
  devices (not the test process's 8), no variables starting with `drop_prefixes`."""
  env = {k: v for k, v in os.environ.items()
         if k != "XLA_FLAGS" and not k.startswith(tuple(drop_prefixes))}
  value = flags(devices, opt_level)
  if value:
    env["XLA_FLAGS"] = value
  return env
