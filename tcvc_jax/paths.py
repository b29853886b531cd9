"""Where tcvc_jax keeps its per-user files (the XDG cache folder)."""

import os


def user_cache_dir(*parts: str) -> str:
  """`$XDG_CACHE_HOME/tcvc_jax` (default `~/.cache/tcvc_jax`), joined with `parts`."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "tcvc_jax", *parts)
