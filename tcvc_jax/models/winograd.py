"""Winograd F(2x2, 3x3) forms of a 3x3 stride-1 'same' convolution (NHWC x HWIO) and its kernel
gradient, for `conv_forms` to measure against the direct forms.

Each 2x2 output tile comes from its 4x4 input tile with 16 products instead of 36 (Lavin and Gray,
"Fast Algorithms for Convolutional Neural Networks", 2016). The transforms run in the operands'
dtype; the results equal the direct convolution's up to the rounding of the sums (one convolution's
error against float64 is a direct fp32 convolution's). F(3x3, 3x3) and F(4x4, 3x3) have 5-6x and
13x that error, still inside the golden tolerances end to end, but were not faster on a 2-vCPU
AMD EPYC (their transforms bound them; README, "Tried and not kept"), so they are not offered.
"""

import jax
import jax.numpy as jnp
import numpy as np

# The kernel transform G (4x3): U = G k G^T.
_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], np.float32)


def _bt(d):
  """Winograd F(2, 3) input transform B^T d along a list of 4 arrays."""
  return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def _at(m):
  """Winograd F(2, 3) output transform A^T m along a list of 4 arrays."""
  return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


WINOGRAD_STRIP_ROWS = 8  # tile rows (16 output rows) per strip: measured best of 4, 6, 8, 12, 16
SHORT_STRIP_BYTES = 16 * 2**20  # `conv_short`'s bound on a strip's transformed tiles


def _winograd_tiles(xp, th, tw):
  """The 16 transformed 4x4 input tiles of a padded block xp [B, 2 th + 2, 2 tw + 2, C].

  Returns [4, 4, B, th, tw, C] (B^T d B for every tile d).
  """
  b, c = xp.shape[0], xp.shape[-1]
  xr = xp.reshape(b, th + 1, 2, tw + 1, 2, c)  # padded row 2i + r = block i, phase r
  rows = _bt([xr[:, :th, 0], xr[:, :th, 1], xr[:, 1:, 0], xr[:, 1:, 1]])
  return jnp.stack([jnp.stack(_bt([r[:, :, :tw, 0], r[:, :, :tw, 1], r[:, :, 1:, 0],
                                   r[:, :, 1:, 1]])) for r in rows])


def _winograd_outputs(m):
  """The 2x2 output tiles A^T m A of transformed products m [4, 4, B, th, tw, O] -> [B, 2 th,
  2 tw, O]."""
  by_col = [_at([m[a, j] for a in range(4)]) for j in range(4)]  # [j][output row phase]
  y = [_at([by_col[j][ry] for j in range(4)]) for ry in range(2)]  # [row phase][col phase]
  out = jnp.stack([jnp.stack(y[ry], axis=3) for ry in range(2)], axis=2)  # b th 2 tw 2 o
  b, th, _, tw, _, o = out.shape
  return out.reshape(b, 2 * th, 2 * tw, o)


def conv(x, kernel, precision=None, rows=None):
  """F(2x2, 3x3): each 2x2 output tile from its 4x4 input tile with 16 products instead of 36.

  The image runs in horizontal strips of WINOGRAD_STRIP_ROWS tile rows, one after the other (a
  loop): a strip's transformed tiles and products (~20 MB at 352 channels and 256 pixels' width)
  stay in the last-level cache between the input transform, the 16 matrix products (one batched
  product) and the output transform, where whole-image transforms stream 4x the input through
  memory. Measured on a 2-vCPU AMD EPYC (AVX-512), 256x256: 352->196 429 ms vs 462 ms for the
  whole-image form and 508 ms for the best direct form; 288->196 270 vs 329-406 vs 449 ms;
  128->128 93 ms vs 141 ms whole-image and 119 ms direct.

  rows: tile rows per strip (default WINOGRAD_STRIP_ROWS); any height gives the same result.
  """
  b, h, w, c = x.shape
  co = kernel.shape[-1]
  th, tw = -(-h // 2), -(-w // 2)
  rows = min(rows or WINOGRAD_STRIP_ROWS, th)
  strips = -(-th // rows)
  xp = jnp.pad(x, ((0, 0), (1, 2 * strips * rows - h + 1), (1, 2 * tw - w + 1), (0, 0)))
  g = jnp.asarray(_G, kernel.dtype)
  u = jnp.einsum("ai,ijco,bj->abco", g, kernel, g, precision=precision)  # (4, 4, C, O)

  def strip(i):
    block = jax.lax.dynamic_slice_in_dim(xp, i * 2 * rows, 2 * rows + 2, axis=1)
    v = _winograd_tiles(block, rows, tw)
    m = jnp.einsum("abnhwc,abco->abnhwo", v, u, precision=precision)
    return _winograd_outputs(m)  # [B, 2 rows, 2 tw, O]

  if strips == 1:
    out = strip(0)
  else:
    out = jax.lax.map(strip, jnp.arange(strips))  # [strips, B, 2 rows, 2 tw, O]
    out = jnp.moveaxis(out, 0, 1).reshape(b, strips * 2 * rows, 2 * tw, co)
  return out[:, :h, :w]


def short_strip_rows(x_shape, cout, itemsize=4):
  """Tile rows per strip of `conv_short`: the most (up to WINOGRAD_STRIP_ROWS, at least 1) whose
  transformed input and output tiles (16 per tile, C_in + C_out channels) fit SHORT_STRIP_BYTES."""
  per_row = 16 * -(-x_shape[2] // 2) * (x_shape[-1] + cout) * itemsize
  return int(max(1, min(WINOGRAD_STRIP_ROWS, SHORT_STRIP_BYTES // per_row)))


def conv_short(x, kernel, precision=None):
  """`conv` in strips of `short_strip_rows`: for wide layers, whose 8-row strips outgrow the cache.

  Measured on a 2-vCPU AMD EPYC (32 MB L3), 256x256, best of 8: 352->196 (36 MB of tiles in an
  8-row strip; 3 rows here) 242-247 ms against 301-310 ms in 8-row strips; 288->196 (4 rows)
  208-210 vs 213-216 ms; 196->128 and narrower ran best in 8-row strips (128->128: 58 ms against
  95 in 4-row strips), so this is a form to measure, not a rule.
  """
  return conv(x, kernel, precision,
              rows=short_strip_rows(x.shape, kernel.shape[-1], jnp.dtype(x.dtype).itemsize))


def _a_rows(d):
  """A d for the F(2, 3) output transform's transpose A (4x2), along a list of 2 arrays."""
  return [d[0], d[0] + d[1], d[0] - d[1], -d[1]]


WINOGRAD_GRAD_STRIP_ROWS = 4  # measured best of 4, 8, 16 for the kernel gradient


def kernel_grad(x, g, precision=None):
  """dW = G^T [sum over tiles (B^T d B) x (A dY A^T)] G: the kernel gradient of F(2x2, 3x3).

  For each of the 16 tile positions, one product of the transformed input tiles [tiles, C] with
  the transformed output-gradient tiles [tiles, O], summed over all tiles: 2.25x fewer multiplies
  than the nine shifted products. Strips of WINOGRAD_GRAD_STRIP_ROWS tile rows run one after
  the other, accumulating the [16, C, O] sums, so the transformed tiles stay in cache and memory
  stays that of one strip. Measured on a 2-vCPU AMD EPYC (AVX-512), 256x256: 352->196 383 ms vs
  856 ms (dots) vs 5.3 s (XLA); 128->128 109 vs 239 ms; 64->64 39 vs 127 ms.
  """
  b, h, w, c = x.shape
  co = g.shape[-1]
  th, tw = -(-h // 2), -(-w // 2)
  rows = min(WINOGRAD_GRAD_STRIP_ROWS, th)
  strips = -(-th // rows)
  xp = jnp.pad(x, ((0, 0), (1, 2 * strips * rows - h + 1), (1, 2 * tw - w + 1), (0, 0)))
  gp = jnp.pad(g, ((0, 0), (0, 2 * strips * rows - h), (0, 2 * tw - w), (0, 0)))

  def strip(i, acc):
    block = jax.lax.dynamic_slice_in_dim(xp, i * 2 * rows, 2 * rows + 2, axis=1)
    v = _winograd_tiles(block, rows, tw).reshape(16, -1, c)
    gb = jax.lax.dynamic_slice_in_dim(gp, i * 2 * rows, 2 * rows, axis=1)
    gb = gb.reshape(b, rows, 2, tw, 2, co)  # output tile (i, j), phase (r, s)
    by_row = _a_rows([gb[:, :, 0], gb[:, :, 1]])
    gt = jnp.stack([jnp.stack(_a_rows([r[:, :, :, 0], r[:, :, :, 1]])) for r in by_row])
    return acc + jax.lax.dot_general(v, gt.reshape(16, -1, co), (((1,), (1,)), ((0,), (0,))),
                                     precision=precision)

  acc = jnp.zeros((16, c, co), jnp.promote_types(x.dtype, g.dtype))
  acc = strip(0, acc) if strips == 1 else jax.lax.fori_loop(0, strips, strip, acc)
  gm = jnp.asarray(_G, acc.dtype)
  return jnp.einsum("ai,abco,bj->ijco", gm, acc.reshape(4, 4, c, co), gm, precision=precision)
