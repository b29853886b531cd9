"""Flags of train.py and eval.py: an ml_collections config file, its overrides, a workdir.

Every mistake on the command line (unknown flag, a config file that does not exist, an unknown
preset, an unknown or mistyped `--config.KEY=VALUE`) ends with one line and exit code 2 before any
work is done or any folder is created; `--help` prints the presets and the main keys and exits 0.
"""

import os
import re
import sys

from absl import flags
from absl import logging

from tcvc_jax import cli
from tcvc_jax import paths

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
# An editable install maps tcvc_jax.configs to the top-level configs/.
if not os.path.isdir(CONFIG_DIR):
  CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def config_path(value: str) -> str:
  """`--config` value -> a file path: a preset name ("demo", "default:released") or a path."""
  name, sep, preset = value.partition(":")
  if os.sep not in name and not name.endswith(".py"):
    candidate = os.path.join(CONFIG_DIR, name + ".py")
    if os.path.isfile(candidate):
      return candidate + sep + preset
  return value


def _rewrite_config_arg(argv):
  """--config's value as a path (`config_path`), and --config first: ml_collections takes
  --config.X overrides only after it (absl: 'Found --config.x in argv before a value for --config
  was specified')."""
  head, rest = [], []
  it = iter(argv[1:])
  for arg in it:
    if arg == "--":
      rest += [arg, *it]
    elif arg == "--config":
      head += ["--config", config_path(next(it, ""))]
    elif arg.startswith("--config="):
      head.append("--config=" + config_path(arg[len("--config="):]))
    else:
      rest.append(arg)
  return argv[:1] + head + rest


def _config_value(argv):
  value = None
  for i, arg in enumerate(argv):
    if arg == "--config" and i + 1 < len(argv):
      value = argv[i + 1]
    elif arg.startswith("--config="):
      value = arg[len("--config="):]
  return value


def _presets():
  return sorted(os.path.splitext(f)[0] for f in os.listdir(CONFIG_DIR)
                if f.endswith(".py") and not f.startswith("_"))


def _config_given_twice(argv):
  """A one-line problem if --config is given more than once (absl's own message names the
  overrides' flags as 'defined twice'), or None."""
  given = [v for i, a in enumerate(argv) for v in
           ([argv[i + 1]] if a == "--config" and i + 1 < len(argv) else
            [a[len("--config="):]] if a.startswith("--config=") else [])]
  if len(given) > 1:
    return f"--config is given {len(given)} times ({', '.join(given)}); give it once"
  return None


def _check_config_arg(argv):
  """A one-line problem with --config's file, or None."""
  value = _config_value(argv)
  if value is None:
    return None
  path = value.split(":", 1)[0]
  if not os.path.isfile(path):
    return (f"config file not found: {path} (give a path or one of {', '.join(_presets())}, "
            "e.g. --config default:tiny)")
  return None


def _explain(err, argv, default_config=None, given=None):
  """One line for a config or flag error from absl / ml_collections (`given`: --config's value as
  the user wrote it, `demo:shrot` rather than the file it names)."""
  text = cli.one_line(err)
  if isinstance(err, (KeyError, AttributeError)) or "KeyError" in text:
    keys = [a.split("=", 1)[0][len("--config."):] for a in argv if a.startswith("--config.")]
    hint = re.search(r"Did you mean (.*?)\?", text)
    text = text.replace(hint.group(0), "") if hint else text  # it names a key that does exist
    hint = f"; did you mean {hint.group(1)}?" if hint else ""
    # The unknown part is a leaf (--config.protocol.interval_lenght) or else a section
    # (--config.protocl.interval_length).
    for depth in range(max((k.count(".") + 1 for k in keys), default=0)):
      for key in keys:
        parts = key.split(".")
        if depth < len(parts) and re.search(r"\b%s\b" % re.escape(parts[-1 - depth]), text):
          return f"unknown config key --config.{key}{hint} (--show_config lists them all)"
    return f"unknown config key: {text} (--show_config lists them all)"
  unknown = re.search(r"Unknown command line flag '([\w.-]+)'", text)
  if (unknown and unknown.group(1).startswith("config.") and default_config is None
      and _config_value(argv) is None):
    return (f"--{unknown.group(1)} without a config to set it in: pass --config "
            f"{'eval' if 'eval' in os.path.basename(argv[0]) else 'FILE'}[:PRESET] too")
  if unknown and (key := _close_config_key(unknown.group(1), argv, default_config)):
    return f"{text}; did you mean --config.{key}?"
  eval_tool = "eval" in os.path.basename(argv[0])  # no config given: eval's own is the one meant
  if unknown and eval_tool and default_config is None and _config_value(argv) is None and (
      key := _close_config_key(unknown.group(1),
                               argv + [f"--config={os.path.join(CONFIG_DIR, 'eval.py')}"], None)):
    return f"{text}; did you mean --config eval --config.{key}?"
  if "Error whilst parsing config file" in text:
    # The traceback is inlined; its last line is the config's own message.
    last = text.rsplit("Error: ", 1)[-1]
    return f"{given or _config_value(argv)}: {last}"
  return text


def _close_config_key(name, argv, default_config):
  """The config key (dotted) closest to a mistyped flag `name` (`--num_train_step`), or None."""
  import difflib  # pylint: disable=g-import-not-at-top

  import ml_collections  # pylint: disable=g-import-not-at-top
  try:
    fv = _define(default_config, None, "")
    args = iter(argv[1:])
    fv([argv[0]] + [f"{a}={next(args, '')}" if a == "--config" else a for a in args
                    if a == "--config" or a.startswith("--config=")])
    config = fv.config
  except Exception:  # pylint: disable=broad-except  # (the flag's own error is told)
    return None
  if config is None:
    return None

  def keys(node, prefix=""):
    for key, value in node.items():
      if isinstance(value, ml_collections.ConfigDict):
        yield from keys(value, f"{prefix}{key}.")
      else:
        yield f"{prefix}{key}"

  dotted = list(keys(config))
  leaf = {k.rsplit(".", 1)[-1]: k for k in dotted}
  close = difflib.get_close_matches(name, dotted, n=1) or difflib.get_close_matches(name, leaf, n=1)
  return None if not close else leaf.get(close[0], close[0])


def _define(default_config, workdir_default, workdir_help):
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", default_config, "Config file[:preset].",
                                  lock_config=True, flag_values=fv)
  flags.DEFINE_string("workdir", workdir_default, workdir_help, flag_values=fv)
  flags.DEFINE_bool("verbose", False, "Show tracebacks and INFO logs.", flag_values=fv)
  flags.DEFINE_bool("show_config", False,
                    "Print the resolved config (every key), check its values and exit (2 if one is "
                    "wrong).",
                    flag_values=fv)
  flags.DEFINE_string("compilation_cache", "auto",
                      "XLA compilation cache: 'auto' (a folder in the user's cache), 'off', or a "
                      "folder.", flag_values=fv)
  return fv


def _help(fv, usage, examples):
  print(usage.strip() + "\n")
  print("flags:")
  for name in ("config", "workdir", "compilation_cache", "show_config", "verbose"):
    flag = fv[name]
    default = "" if name == "config" else f" (default: {flag.default!r})"
    print(f"  --{name}: {flag.help}{default}")
  print("\n" + examples.rstrip())
  print("\n" + cli.EXIT_CODES_HELP)


def parse(argv, usage, examples, default_config, workdir_default, workdir_help, validate=None):
  """Parses argv; returns (config, workdir, verbose, compilation_cache) or an exit code.

  `validate(config)`: the tool's check of its config's values, a one-line problem or None; run
  for --show_config too, which prints the config and then the problem (exit 2), so that a config
  checked with it is one the tool runs.
  """
  twice = _config_given_twice(list(argv))
  given = _config_value(list(argv))
  argv = _rewrite_config_arg(list(argv))
  if any(a in ("-h", "--help", "-help", "--helpshort", "--helpfull") for a in argv[1:]):
    _help(_define(None, workdir_default, workdir_help), usage, examples)
    return cli.EXIT_OK
  problem = twice or _check_config_arg(argv)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return cli.EXIT_USAGE
  try:
    # ml_collections reads sys.argv's --config.* overrides when the flag is defined.
    sys.argv[:] = argv
    fv = _define(default_config, workdir_default, workdir_help)
    rest = fv(argv)
    config = fv.config
    if config is not None:
      config.to_dict()  # a config that failed to load raises here
  except Exception as e:  # pylint: disable=broad-except
    text = _explain(e, argv, default_config, given)
    if "--show_config" not in text:
      text += f" (see {os.path.basename(argv[0])} --help)"
    print(f"error: {text}", file=sys.stderr)
    return cli.EXIT_USAGE
  if len(rest) > 1:
    print(f"error: unexpected arguments: {' '.join(rest[1:])}", file=sys.stderr)
    return cli.EXIT_USAGE
  if config is None:
    print("error: no config: pass --config FILE[:PRESET] (see --help)", file=sys.stderr)
    return cli.EXIT_USAGE
  _expand_home(config)
  if fv.show_config:
    problem = validate(config) if validate else None  # (which may normalise values)
    print(config)
    if problem:
      print(f"error: {problem}", file=sys.stderr)
      return cli.EXIT_USAGE
    return cli.EXIT_OK
  if not fv.workdir:
    print("error: no workdir: pass --workdir FOLDER", file=sys.stderr)
    return cli.EXIT_USAGE
  return config, os.path.expanduser(fv.workdir), fv.verbose, fv.compilation_cache


def _expand_home(config):
  """`~` and `~/...` in the config's strings (its paths) as the home folder. A shell does that for
  a word that starts with `~`, not after `--config.data.data_dir=`: `~/tfds` was a folder named
  `~` in the current folder (which `rm -rf ~` would then mistake for the home folder)."""
  import ml_collections  # pylint: disable=g-import-not-at-top  # (late, as in _define)
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      _expand_home(value)
    elif isinstance(value, str) and (value == "~" or value.startswith("~/")):
      config[key] = os.path.expanduser(value)


def parse_train_flags(argv, usage, examples, validate=None):
  out = parse(argv, usage, examples, os.path.join(CONFIG_DIR, "demo.py"), "runs/demo",
              "Where checkpoints, metrics and images go.", validate)
  if isinstance(out, int):
    return out
  config, workdir, verbose, cache = out
  with config.unlocked():
    config.compilation_cache = cache
  return config, workdir, verbose


# The Python loggers quiet_third_party_logs sets (to WARNING; tensorboardX's to ERROR).
QUIETED_LOGGERS = ("jax", "orbax", "absl", "grain", "tensorflow_datasets")
NON_FINITE_LOGGER = "tensorboardX.x2num"


def quiet_third_party_logs(verbose: bool) -> None:
  """INFO logs (ours, orbax's, JAX's backend probing) only with --verbose; warnings always, but
  tensorboardX's about non-finite values (the trainer reports those itself)."""
  logging.set_verbosity(logging.INFO if verbose else logging.WARNING)
  if not verbose:
    import logging as std_logging  # pylint: disable=g-import-not-at-top
    for name in QUIETED_LOGGERS:
      std_logging.getLogger(name).setLevel(std_logging.WARNING)
    # "NaN or Inf found in input tensor" at every logged non-finite loss: the progress bar shows
    # loss=nan, and the trainer stops with one error line after optim.max_consecutive_nonfinite.
    std_logging.getLogger(NON_FINITE_LOGGER).setLevel(std_logging.ERROR)


def default_cache_dir() -> str:
  return paths.user_cache_dir("xla")


def compilation_cache_off(setting) -> bool:
  """Whether a compilation cache setting ('auto' / None, 'off', or a folder) turns it off."""
  return setting in ("off", "none", "", False)


def enable_compilation_cache(setting: str | None) -> str | None:
  """Turns on JAX's persistent compilation cache: 'auto' / None, 'off', or a folder; returns it."""
  if compilation_cache_off(setting):
    return None
  if setting in (None, "auto", True):
    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or default_cache_dir()
  else:
    path = os.path.expanduser(setting)
  # JAX makes the folder when it first stores a program: a run that fails before (a bad input, an
  # existing output) leaves none. Whether it could is checked now.
  made = os.path.abspath(path)
  while not os.path.exists(made) and os.path.dirname(made) != made:
    made = os.path.dirname(made)
  if not os.path.isdir(made) or not os.access(made, os.W_OK | os.X_OK):
    print(f"warning: compilation cache {path} not usable ({made} is "
          f"{'not a folder' if not os.path.isdir(made) else 'not writable'}); compiling from "
          "scratch", file=sys.stderr, flush=True)
    return None
  if (setting not in (None, "auto", True) and not os.path.exists(path)
      and path != default_cache_dir()):  # a typo of off / auto?
    print(f"note: compilation cache: a new folder {os.path.abspath(path)}, made at the first "
          "compile (the setting is auto, off or a folder)", file=sys.stderr, flush=True)
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs",
                    float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", 0.5)))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
