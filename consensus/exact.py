"""Exact arithmetic for the canonical step (protocol v3): every result is the same bits on every
IEEE-754 machine, whatever the kernels, SIMD width, thread count or device.

Two kinds of operation are allowed, and nothing else (docs/protocol.md §5, "The exact step"):

* **Exact reductions.** A sum (or a sum of products: GEMM, convolution, BatchNorm statistics)
  is taken over *integers*: each operand tensor is quantised to integers ``q`` with
  ``|q| <= 2^B`` by a power-of-two scale chosen from its largest magnitude (a maximum does not
  depend on order), the products and every partial sum are integers below ``2^53``, so fp64
  adds them without rounding in any order, blocking, FMA contraction or thread split; the sum
  is rescaled by a power of two (exact). ``check_exact`` refuses a shape whose bound fails.
* **Single IEEE operations, elementwise.** ``+ - * /`` and ``sqrt`` on fp64 (or fp32, where the
  spec says so) tensors, one rounding each, round-to-nearest-even; comparisons, ``max``, ``round``
  (half to even, by the 1.5 * 2^52 trick, ``round_even``); conversions fp64 -> fp32. No fused kernels, no ``rsqrt``, no libm: ``exp`` is a
  fixed polynomial below.

The quantisation rule, for a tensor x (fp64, finite): ``m = max|x|``; ``e`` = the exponent with
``2^(e-1) <= m < 2^e`` (from the bits of m; ``e = -1022`` for m = 0); ``q = round(x * 2^(B-e))``,
``scale = 2^(e-B)``, so x ~ q * scale. Powers of two are built from their bits (``pow2``), never
by ``pow`` or ``ldexp``.
"""
from __future__ import annotations

import math

import torch

F64 = torch.float64
EXACT_LIMIT = 2.0 ** 53     # every partial sum of an exact reduction stays below this


class InexactShape(ValueError):
    """An exact reduction whose integer sums could reach 2^53 (the architecture does not fit the rule)."""


def check_exact(bits: int, terms: int, factors: int = 2, overlap: int = 1) -> None:
    """Refuse a reduction of ``terms`` products of ``factors`` quantised operands (|q| <= 2^bits),
    each result then added ``overlap`` times (col2im), whose sums could reach 2^53."""
    if terms * overlap * 2.0 ** (bits * factors) >= EXACT_LIMIT:
        raise InexactShape(f"a sum of {terms} x {overlap} products of {factors} {bits}-bit integers can reach 2^53")


def pow2(e: torch.Tensor) -> torch.Tensor:
    """2^e as fp64, exactly, from the exponent bits (e: int64 in [-1022, 1023])."""
    return ((e + 1023) << 52).view(F64)


def exponent(m: torch.Tensor) -> torch.Tensor:
    """e with 2^(e-1) <= m < 2^e for a finite fp64 m > 0 (int64; -1022 for m = 0 or subnormal m)."""
    return ((m.view(torch.int64) >> 52) & 0x7FF) - 1022


ROUND_MAGIC = 6755399441055744.0      # 1.5 * 2^52


def round_even(x: torch.Tensor) -> torch.Tensor:
    """x rounded to the nearest integer, ties to even, for fp64 |x| < 2^51: ``(x + 1.5*2^52) - 1.5*2^52``
    (two IEEE additions). ``torch.round`` is not used: its scalar CPU kernel rounds ties away from zero."""
    return (x + ROUND_MAGIC) - ROUND_MAGIC


def quantize(x: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q, scale): q = round(x * 2^(bits - e)) integer-valued fp64 with |q| <= 2^bits, scale = 2^(e - bits)
    (a 0-d fp64 tensor), e from max|x| over the whole tensor. x: fp64, or fp32 (a parameter: its
    fp64 value is exact, and so is its maximum; only the bytes read differ)."""
    lo, hi = torch.aminmax(x)
    e = exponent(torch.maximum(hi, -lo).to(F64))  # max |x| (NaN propagates: a NaN state is refused)
    shift = torch.clamp(bits - e, max=1000)       # m = 0: any scale gives q = 0
    q = x * pow2(shift) if x.dtype == F64 else x.to(F64).mul_(pow2(shift))   # a fresh tensor
    q.add_(ROUND_MAGIC).sub_(ROUND_MAGIC)         # round_even, in place
    return q, pow2(-shift)


def exact_matmul(qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    """qa @ qb (batched as torch.matmul) of integer-valued fp64 tensors: exact (see check_exact)."""
    return torch.matmul(qa, qb)


def exact_matmul_nkl(qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    """qa [O, K] @ qb [N, K, L] -> [N, O, L] (contiguous), exactly. Any grouping and
    any order of the products gives the same bits, so the shape is chosen for speed (measured on
    the ResNet-18 layer shapes, docs/benchmarks.md 8.1): where L is small, one GEMM
    qb^T [N*L, K] @ qa^T [K, O] (the tall-and-narrow [K, N*L] result of qa @ qb ran at a third of
    the rate), else one batched GEMM per sample."""
    n, k, ell = qb.shape
    if ell > 64:
        return torch.matmul(qa, qb)
    flat = qb.transpose(1, 2).reshape(n * ell, k) @ qa.t()
    return flat.view(n, ell, qa.shape[0]).transpose(1, 2).contiguous()


def exact_matmul_nlk(qa: torch.Tensor, qb: torch.Tensor) -> torch.Tensor:
    """sum over n of qa[n] [O, L] @ qb[n]^T [L, K] -> [O, K], exactly (the weight gradient)."""
    n, o, ell = qa.shape
    if ell > 64:
        return torch.matmul(qa, qb.transpose(1, 2)).sum(dim=0)
    return qa.transpose(0, 1).reshape(o, n * ell) @ qb.transpose(0, 1).reshape(qb.shape[1], n * ell).t()


def exact_sum(x: torch.Tensor, dims, bits: int) -> torch.Tensor:
    """sum of x over ``dims``, exactly, of x quantised per tensor (fp64 result)."""
    q, s = quantize(x, bits)
    return q.sum(dim=dims) * s


def exact_dot_sum(x: torch.Tensor, y: torch.Tensor, dims, bits: int) -> torch.Tensor:
    """sum of x*y over ``dims`` of x and y each quantised per tensor (fp64 result)."""
    qx, sx = quantize(x, bits)
    if y is x:                                    # a sum of squares: one quantisation, the same q
        return qx.square_().sum(dim=dims) * (sx * sx)
    qy, sy = quantize(y, bits)
    return qx.mul_(qy).sum(dim=dims) * (sx * sy)


# -- exp: a fixed polynomial ----------------------------------------------------------------------
INV_LN2 = 1.4426950408889634        # fp64 nearest to 1/ln 2
LN2 = 0.6931471805599453            # fp64 nearest to ln 2
EXP_MIN = -87.0                     # exp of anything below is exp(-87) (no subnormal ever appears)
EXP_DEGREE = 13
EXP_COEFFS = tuple(1.0 / math.factorial(i) for i in range(EXP_DEGREE + 1))   # IEEE divisions, fixed


def exp_nonpositive(t: torch.Tensor) -> torch.Tensor:
    """exp(t) for fp64 t <= 0, deterministic to the bit: t is clamped to >= -87; n = round(t * INV_LN2);
    r = t - n * LN2; p = Horner's rule over the Taylor coefficients 1/i!, i = 13 down to 0
    (p = p * r, then p = p + c, two roundings a term); result p * 2^n."""
    t = torch.clamp(t, min=EXP_MIN)
    n = round_even(t * INV_LN2)
    r = t - n * LN2
    p = torch.full_like(r, EXP_COEFFS[EXP_DEGREE])
    for c in reversed(EXP_COEFFS[:EXP_DEGREE]):
        p = p * r
        p = p + c
    return p * pow2(n.to(torch.int64))
