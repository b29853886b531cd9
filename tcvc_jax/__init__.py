"""tcvc_jax: Temporally Consistent Video Colorization (Liu et al. 2021) in JAX/Flax.

`tcvc_jax.load(path)` returns a `Colorizer`; see tcvc_jax/api.py. The package imports its submodules
lazily, so `python -m tcvc_jax.convert` does not load the model code twice.
"""

__all__ = ["Colorizer", "load"]
__version__ = "0.1.0"


def __getattr__(name):
  if name in __all__:
    from tcvc_jax import api  # pylint: disable=g-import-not-at-top
    return getattr(api, name)
  raise AttributeError(f"module 'tcvc_jax' has no attribute {name!r}")
