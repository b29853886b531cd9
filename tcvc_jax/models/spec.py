"""One description of a TCVC model: its layer sizes and flow type (`ModelSpec`).

It is what a checkpoint needs to be rebuilt: train.py writes it into a workdir's `model.json`, the
converter into `tcvc_meta.json`, and `tcvc_jax.load`, train.py and the converter read it back. How a
model is run (compute dtype, scan unroll, flow batch, remat) is not part of it: those are arguments
of `ModelSpec.build`. The network-size rule lives here too (`size_multiple`, `check_size`).
"""

import dataclasses
from typing import Any
from typing import Mapping

from tcvc_jax.models.siggraph17 import DEFAULT_WIDTHS

FLOW_TYPES = ("flownet2", "classical")
# Sizes of the original TCVC_IDC (the only ones the original code can load).
RELEASED = dict(colorizer_widths=DEFAULT_WIDTHS, l_features=32, reduced_features=64,
                weighting_hidden=(196, 64), refine_hidden=(196, 128), flow_type="flownet2")


class SpecError(ValueError):
  """An impossible model description; the message says which field and why."""


def _ints(value, name, length=None):
  try:
    out = tuple(int(v) for v in value)
  except (TypeError, ValueError) as e:
    raise SpecError(f"model.{name} must be a list of integers, got {value!r}") from e
  if length is not None and len(out) != length:
    raise SpecError(f"model.{name} must have {length} entries, got {len(out)}")
  if any(v <= 0 for v in out):
    raise SpecError(f"model.{name} must be positive, got {list(out)}")
  return out


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """A TCVC model's sizes and flow type (defaults: the original's released model).

  Attributes:
    colorizer_widths: the ten SIGGRAPH17 block widths; the last is the propagated feature (128).
    l_features: L_fea_extractor width (32).
    reduced_features: channel_reduction width (64).
    weighting_hidden: the two hidden widths of the weighting net (196, 64).
    refine_hidden: the two hidden widths of the refine net (196, 128).
    flow_type: "flownet2" (frozen FlowNet2 weights) or "classical" (parameter-free TV-L1).
    classical_flow: sorted (name, value) pairs of the classical estimator's options, or None.
  """
  colorizer_widths: tuple[int, ...] = RELEASED["colorizer_widths"]
  l_features: int = 32
  reduced_features: int = 64
  weighting_hidden: tuple[int, int] = (196, 64)
  refine_hidden: tuple[int, int] = (196, 128)
  flow_type: str = "flownet2"
  classical_flow: tuple[tuple[str, Any], ...] | None = None

  def __post_init__(self):
    put = lambda k, v: object.__setattr__(self, k, v)
    put("colorizer_widths", _ints(self.colorizer_widths, "colorizer_widths", 10))
    put("weighting_hidden", _ints(self.weighting_hidden, "weighting_hidden", 2))
    put("refine_hidden", _ints(self.refine_hidden, "refine_hidden", 2))
    for name in ("l_features", "reduced_features"):
      put(name, _ints([getattr(self, name)], name)[0])
    if self.flow_type not in FLOW_TYPES:
      raise SpecError(f"flow type must be one of {', '.join(FLOW_TYPES)}, got {self.flow_type!r}")
    if self.flow_type == "classical":
      options = dict(self.classical_flow or ())
      put("classical_flow", tuple(sorted((str(k), v) for k, v in options.items())))
    else:
      put("classical_flow", None)

  # ------------------------------------------------------------------ the size rule

  @property
  def size_multiple(self) -> int:
    """H and W of a window must be multiples of this: FlowNet2 needs 64, the colorizer alone 8."""
    return 64 if self.flow_type == "flownet2" else 8

  def check_size(self, height: int, width: int, what: str = "network size") -> None:
    """Raises SpecError unless (height, width) are positive multiples of `size_multiple`."""
    m = self.size_multiple
    if height <= 0 or width <= 0 or height % m or width % m:
      raise SpecError(f"{what} {height}x{width}: the {self.flow_type} flow needs positive "
                      f"multiples of {m}")

  @property
  def is_released_size(self) -> bool:
    """Whether the original PyTorch code can load this model (its layer sizes and FlowNet2)."""
    return all(getattr(self, k) == v for k, v in RELEASED.items())

  # ------------------------------------------------------------------ files and configs

  def to_json(self) -> dict[str, Any]:
    """JSON-friendly dict (lists for tuples); `from_json` reads it back."""
    out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    out = {k: list(v) if isinstance(v, tuple) and k != "classical_flow" else v
           for k, v in out.items()}
    if self.classical_flow is not None:
      out["classical_flow"] = [[k, v] for k, v in self.classical_flow]
    return out

  @classmethod
  def from_json(cls, data: Mapping[str, Any]) -> "ModelSpec":
    """From `to_json` output; run-time keys (dtype, unroll, ...) are ignored, others refused."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names - set(RUNTIME_KEYS))
    if unknown:
      raise SpecError(f"unknown model field(s): {', '.join(unknown)}")
    return cls(**{k: v for k, v in data.items() if k in names})

  @classmethod
  def from_config(cls, config) -> "ModelSpec":
    """From a train.py config: `config.model` sizes, `config.flow.type` and its options."""
    model = config.model.to_dict()
    flow_type = config.flow.type
    classical = config.flow.classical.to_dict() if flow_type == "classical" else None
    return cls.from_json(dict(model, flow_type=flow_type,
                              classical_flow=None if classical is None else classical.items()))

  def build(self, *, dtype: Any = None, remat: bool = False, **runtime):
    """The Flax TCVC module; `runtime` takes TCVC's run-time fields (unroll, flow_batch, ...)."""
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

    from tcvc_jax.models import tcvc  # pylint: disable=g-import-not-at-top
    unknown = sorted(set(runtime) - set(RUNTIME_KEYS))
    if unknown:
      raise SpecError(f"unknown run-time option(s): {', '.join(unknown)}")
    runtime = {k: jnp.dtype(v) if k in ("dtype", "param_dtype") and isinstance(v, str) else v
               for k, v in runtime.items()}
    if dtype is not None:
      runtime["dtype"] = jnp.dtype(dtype) if isinstance(dtype, str) else dtype
    cls = _remat_class() if remat else tcvc.TCVC
    fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    return cls(**fields, **runtime)


FIELDS = ("colorizer_widths", "l_features", "reduced_features", "weighting_hidden", "refine_hidden",
          "flow_type", "classical_flow")
# TCVC attributes that say how to run a model, not what it is.
RUNTIME_KEYS = ("unroll", "flow_batch", "dtype", "param_dtype", "precision")


def _remat_class():
  """TCVC that recomputes each propagation step in the backward pass instead of storing it.

  The memory of a window then grows with the carried feature only, not with every step's
  activations of the weighting and refine nets; parameter paths are unchanged.
  """
  from flax import linen as nn  # pylint: disable=g-import-not-at-top

  from tcvc_jax.models import tcvc  # pylint: disable=g-import-not-at-top
  global _REMAT
  if _REMAT is None:

    class RematTCVC(tcvc.TCVC):

      def _cell(self, g_prev, xs):
        return nn.remat(tcvc.TCVC._cell)(self, g_prev, xs)  # pylint: disable=protected-access

    _REMAT = RematTCVC
  return _REMAT


_REMAT = None
