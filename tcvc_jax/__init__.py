"""tcvc_jax: Temporally Consistent Video Colorization (Liu et al. 2021) in JAX/Flax.

`tcvc_jax.load(path)` returns a `Colorizer`; see tcvc_jax/api.py. The package imports its submodules
lazily, so `python -m tcvc_jax.convert` does not load the model code twice.
"""

__all__ = ["Colorizer", "enable_compilation_cache", "load"]
__version__ = "0.1.0"


# Submodules reachable as attributes after `import tcvc_jax` (tcvc_jax.streaming.colorize_file).
_SUBMODULES = ("api", "carrying", "convert", "export", "guidance", "media", "models", "ops",
               "porting", "pth", "streaming", "evaluation", "training", "data")


def __getattr__(name):
  if name in __all__:
    from tcvc_jax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  if name in _SUBMODULES:
    import importlib  # pylint: disable=g-import-not-at-top
    return importlib.import_module(f"tcvc_jax.{name}")
  raise AttributeError(f"module 'tcvc_jax' has no attribute {name!r}")
