"""Branch-free scalar math helpers for generated CPU kernels.

numba lowers ``math.exp``/``math.tanh``/... on float32 to scalar libm calls (the pip build has no SVML), so
a kernel loop calling them cannot be vectorised.  The ``*_f32`` functions below use only float32
arithmetic, integer bit tricks and selects -- no libm calls, no data-dependent branches -- so once they
are inlined into a generated loop, the loop vectorises (AVX2/AVX-512).  They are compiled with
``forceinline`` (LLVM's alwaysinline), not numba's ``inline="always"``: LLVM inlines the separately
compiled helper, whose instructions keep their own strict floating-point flags, so a caller compiled
with ``fastmath`` cannot reassociate the range reductions.

Every ``*_f32`` function takes and returns float32 (other inputs are converted first).  Max error against
the correctly rounded result, over all 2**32 float32 inputs: 1 ulp for exp, expm1, log, log1p, tanh,
acos and erf; 2 ulp for sigmoid; 2 ulp for sin and cos with |x| < 128, and beyond, over the whole
float32 range, 2 ulp (a logarithmic sweep; 1.5 ulp measured): from 128 on the argument is reduced by
Payne-Hanek with 192 bits of 2/pi, exact for every float32 (positional encodings take sines of
large arguments).  Computing both reductions costs: sin/cos of 2**22 float32 took 2.1 ms with the
Cody-Waite reduction alone, 5.3 ms with both (numpy's float32 sin: 5.1 ms).  Subnormal inputs and
results (gradual underflow), signed zeros, infinities and NaN follow IEEE/libm semantics.  The ``*_f64`` counterparts are correct rather
than fast and mostly wrap ``math``.

Polynomial coefficients are minimax fits (Remez exchange, relative error) made for this module on the
reduced intervals named in each comment, then rounded to float32.
"""

import math

import numpy as np
from numba import njit

_f32 = np.float32

# fastmath=False is explicit on purpose: numba otherwise inherits ``fastmath``
# from whichever caller triggers a helper's first compilation (and then reuses
# that version for every caller).  forceinline=True sets LLVM's alwaysinline,
# so even the larger helpers are inlined into -- and vectorised with -- the
# calling loop, keeping their own strict instruction flags (numba's
# inline="always" would instead re-lower them with the caller's flags).
_jit = njit(error_model="numpy", fastmath=False, forceinline=True)

ZERO = _f32(0.0)
HALF = _f32(0.5)
ONE = _f32(1.0)
TWO = _f32(2.0)
INF = _f32(np.inf)
NAN = _f32(np.nan)
FLT_MIN = _f32(2.0**-126)  # smallest normal float32
TWO_P23 = _f32(2.0**23)

# Adding then subtracting 1.5 * 2**23 rounds a float32 of magnitude < 2**22 to
# the nearest integer; the integer is also the low bits of the sum.
ROUND_MAGIC = _f32(12582912.0)
ROUND_MAGIC_BITS = 0x4B400000

# ln 2 = LN2_HI + LN2_LO with a 16-bit head: k * LN2_HI is exact for |k| < 256.
LN2_HI = _f32(0.693145751953125)
LN2_LO = _f32(1.4286068e-06)
LOG2E = _f32(1.0 / math.log(2.0))

# pi/2 = PIO2_1 + PIO2_2 + PIO2_3 + PIO2_4 (to ~2**-54); the first three have at most
# 8 significant bits, so q * PIO2_k is exact for integers q < 83468 (x < 1.31e5).
PIO2_1 = _f32(1.5703125)
PIO2_2 = _f32(4.84466552734375e-04)
PIO2_3 = _f32(-6.4074993e-07)
PIO2_4 = _f32(9.920936e-10)
TWO_OVER_PI = _f32(2.0 / math.pi)

# Payne-Hanek: the first 192 bits of the fraction of 2/pi, as three 64-bit words (high first).
TWO_OVER_PI_BITS = 0xA2F9836E4E441529FC2757D1F534DDC0DB6295993C439041
TWO_OVER_PI_WORDS = tuple(np.uint64((TWO_OVER_PI_BITS >> s) & (2**64 - 1)) for s in (128, 64, 0))
PIO2_2P62 = float.fromhex("0x1.921FB54442D18p-62")  # pi/2 * 2**-62 (float64): one quadrant of the fixed point
SIN_LARGE = _f32(128.0)  # from here sin and cos reduce by Payne-Hanek

PIO2_HI = _f32(math.pi / 2)
PIO2_LO = _f32(math.pi / 2 - float(PIO2_HI))
PI_HI = _f32(math.pi)
PI_LO = _f32(math.pi - float(PI_HI))

# exp(x) overflows above ~88.72 and rounds to 0 below ~-103.97.
EXP_MAX = _f32(89.0)
EXP_MIN = _f32(-104.0)
# expm1(x) rounds to -1 below ~-17.33.
EXPM1_MIN = _f32(-18.0)

# sqrt(1/2) as float32 bits: log reduces mantissas to [sqrt(1/2), sqrt(2)).
SQRT_HALF_BITS = 0x3F3504F3
SIGN_BIT = -0x80000000  # 0x80000000 as an int32


def _coeffs(*values):
    return tuple(_f32(v) for v in values)


# expm1(r) ~ r + r**2 * P(r), |r| <= ln2/2; rel. error 2**-31.9.
EXPM1_P = _coeffs(0.5, 0.16666666, 0.041666348, 0.0083333915, 0.001394164, 0.00019845957)
# log1p(f) ~ f + f**2 * P(f), f in [sqrt(1/2)-1, sqrt(2)-1]; rel. error 2**-27.8.
LOG1P_P = _coeffs(
    -0.49999988, 0.33333325, -0.25001618, 0.20002066, -0.16608249, 0.14179365, -0.13247834, 0.12923378, -0.076333545
)
# tanh(x) ~ x + x**3 * P(x**2), |x| <= 0.625; rel. error 2**-27.8.
TANH_P = _coeffs(-0.3333328, 0.13331442, -0.053739715, 0.020639088, -0.0057049873)
# sin(r) ~ r + r**3 * P(r**2), |r| <= pi/4; rel. error 2**-28.0.
SIN_P = _coeffs(-0.16666655, 0.008332155, -0.00019514454)
# cos(r) ~ 1 + r**2 * P(r**2), |r| <= pi/4; rel. error 2**-33.9.
COS_P = _coeffs(-0.5, 0.04166662, -0.001388667, 2.438249e-05)
# asin(u) ~ u + u**3 * P(u**2), 0 <= u <= 1/2; rel. error 2**-27.6.
ASIN_P = _coeffs(0.16666752, 0.074952886, 0.04547161, 0.02417295, 0.042178232)
# erf(x) ~ x + x * P(x**2), |x| <= 1; rel. error 2**-29.6.
ERF_P = _coeffs(0.12837917, -0.37612626, 0.112835854, -0.026853813, 0.0051883277, -0.00080101937, 7.8538615e-05)
# log(erfc(x)) + x**2 ~ Q(x), 1 <= x <= 4; error 2**-29.8 relative to erf(x).
ERFC_Q = _coeffs(-0.0003415233, -1.1270891, 0.36185518, -0.10310675, 0.021838063, -0.002947658, 0.00018637917)


# ---------------------------------------------------------------------------
# bit-level helpers
# ---------------------------------------------------------------------------


@_jit
def _as_int(x):
    return _f32(x).view(np.int32)


@_jit
def _as_float(i):
    return np.int32(i).view(np.float32)


@_jit
def _xorsign(y, x):
    # y with its sign flipped when x has the sign bit set (odd functions, -0.0).
    return _as_float(_as_int(y) ^ (_as_int(x) & SIGN_BIT))


@_jit
def _pow2(k):
    # 2**k for integer k in [-126, 127], built from the exponent bits.
    return _as_float((k + 127) << 23)


@_jit
def _reduce_ln2(x):
    # x = n * ln2 + r with n the nearest integer to x / ln2 (|x| < 2**21).
    t = x * LOG2E + ROUND_MAGIC
    n = np.int32(_as_int(t) - ROUND_MAGIC_BITS)
    nf = t - ROUND_MAGIC
    r = (x - nf * LN2_HI) - nf * LN2_LO  # nf * LN2_HI exact, the subtraction too
    return n, r


@_jit
def _expm1_kernel(r):
    p = EXPM1_P
    q = p[0] + r * (p[1] + r * (p[2] + r * (p[3] + r * (p[4] + r * p[5]))))
    return r + r * r * q


@_jit
def _log_kernel(y, k, c):
    # log(y * 2**k) + c for a positive normal float32 y, integral float32 k and
    # a small correction c.  y = 2**e * m with m in [sqrt(1/2), sqrt(2)), then
    # log(m) = log1p(m - 1).
    iy = np.int32(_as_int(y) - SQRT_HALF_BITS)
    kf = _f32(np.int32(iy >> 23)) + k
    f = _as_float((iy & 0x007FFFFF) + SQRT_HALF_BITS) - ONE  # exact
    p = LOG1P_P
    q = p[0] + f * (p[1] + f * (p[2] + f * (p[3] + f * (p[4] + f * (p[5] + f * (p[6] + f * (p[7] + f * p[8])))))))
    return kf * LN2_HI + (f + (f * f * q + (kf * LN2_LO + c)))


# ---------------------------------------------------------------------------
# float32
# ---------------------------------------------------------------------------


@_jit
def exp_f32(x):
    # x = n ln2 + r, exp(r) by polynomial, times 2**n in two steps so that
    # overflow gives inf and underflow is gradual (a single rounding).
    # Below EXP_MIN the result rounds to 0 (a masked softmax's -inf): those lanes compute at 0
    # and select 0, since a product that underflows costs a microcode assist per element.
    x = _f32(x)
    under = x < EXP_MIN
    xc = EXP_MAX if x > EXP_MAX else x  # NaN passes through
    xc = ZERO if under else xc
    n, r = _reduce_ln2(xc)
    h = n >> 1
    res = (ONE + _expm1_kernel(r)) * _pow2(h) * _pow2(n - h)
    return ZERO if under else res


@_jit
def expm1_f32(x):
    # Same reduction as exp; expm1(x) = 2**n * expm1(r) + (2**n - 1), formed
    # as 2 * (s * expm1(r) + (s - 1/2)) with s = 2**(n-1) to avoid overflow.
    x = _f32(x)
    xc = EXP_MAX if x > EXP_MAX else x
    xc = EXPM1_MIN if xc < EXPM1_MIN else xc
    n, r = _reduce_ln2(xc)
    em = _expm1_kernel(r)
    s = _pow2(n - 1)
    res = (s * em + (s - HALF)) * TWO
    res = em if n == 0 else res  # |x| < ln2/2: expm1(r) itself (tiny and subnormal x stay exact)
    return x if x == ZERO else res  # keeps the sign of zero


@_jit
def log_f32(x):
    # Subnormals are scaled by 2**23 first; then x = 2**k * m with m in
    # [sqrt(1/2), sqrt(2)) and log(x) = k ln2 + log1p(m - 1) by polynomial.
    x = _f32(x)
    sub = x < FLT_MIN
    res = _log_kernel(x * TWO_P23 if sub else x, _f32(-23.0) if sub else ZERO, ZERO)
    res = x if x == INF else res
    res = -INF if x == ZERO else res
    return res if x >= ZERO else NAN  # negative or NaN input


@_jit
def log1p_f32(x):
    # log(u) for u = fl(1 + x) as in log_f32, plus the first-order correction
    # (1 + x - u) / u for the rounding of u (the fdlibm/musl scheme).
    x = _f32(x)
    u = ONE + x
    # Both differences are exact in their range of use (Sterbenz).
    d = x - (u - ONE) if u < _f32(4.0) else ONE - (u - x)
    res = _log_kernel(u, ZERO, d / u)
    res = x if (x == INF) | (x == ZERO) else res
    res = -INF if u == ZERO else res
    return res if u >= ZERO else NAN  # x < -1 or NaN


@_jit
def tanh_f32(x):
    # On |x|: below 0.625 an odd polynomial, otherwise 1 - 2 / (exp(2|x|) + 1)
    # (saturates to 1 as exp overflows, propagates NaN); then the sign of x.
    x = _f32(x)
    a = abs(x)
    a2 = a * a
    p = TANH_P
    small = a + a * a2 * (p[0] + a2 * (p[1] + a2 * (p[2] + a2 * (p[3] + a2 * p[4]))))
    big = ONE - TWO / (exp_f32(a + a) + ONE)
    return _xorsign(small if a < _f32(0.625) else big, x)


@_jit
def sigmoid_f32(x):
    # With e = exp(-|x|) in (0, 1]: 1 / (1 + e) for x >= 0, e / (1 + e)
    # otherwise; no overflow, and tiny results underflow gradually.
    x = _f32(x)
    e = exp_f32(-abs(x))
    return (ONE if x >= ZERO else e) / (ONE + e)


@_jit
def _funnel(hi, lo, b):
    # The 64 bits from bit b (0 <= b < 64) of the 128-bit hi:lo (two shifts: a shift by 64 is undefined).
    return (lo >> b) | ((hi << np.uint64(1)) << (np.uint64(63) - b))


@_jit
def _reduce_large(x):
    # x = q pi/2 + r for 2 <= x < inf, exactly enough for every float32 (Payne-Hanek, after ARM's
    # optimized-routines sinf): x = m * 2**e with a 24-bit m; the 96 bits of 2/pi that matter at
    # this exponent, three 32-bit windows w0 w1 w2 cut from the words by shifts (no table
    # lookups: gathers made the loop 5x slower), times m give x * 2/pi as 64-bit fixed point with
    # 62 fraction bits modulo 4 (the integer bits left out are multiples of 4).  Returns (q mod 4,
    # r).
    u = np.uint64
    bits = u(_as_int(x)) & u(0xFFFFFFFF)
    m = ((bits & u(0x7FFFFF)) | u(0x800000)) << ((bits >> u(23)) & u(7))  # the exponent's low bits shift m
    o = u(120) - u(8) * ((bits >> u(26)) & u(15))  # and its high bits place the windows at bit o
    w_hi, w_mid, w_lo = TWO_OVER_PI_WORDS
    low = o < u(64)
    b = o & u(63)
    lo = _funnel(w_mid if low else w_hi, w_lo if low else w_mid, b)
    hi = _funnel(w_hi if low else u(0), w_mid if low else w_hi, b)
    mask = u(0xFFFFFFFF)
    top = (m * (hi & mask)) & mask  # only its low 32 bits are below the 4s place
    fixed = ((m * (lo & mask)) >> u(32) | top << u(32)) + m * (lo >> u(32))
    q = (fixed + (u(1) << u(61))) >> u(62)  # rounded to the nearest quadrant
    r = np.float64(np.int64(fixed - (q << u(62)))) * PIO2_2P62  # float32 here: 2.5 ulp, no faster
    return np.int32(q & u(3)), _f32(r)


@_jit
def _sin_quadrant(x, shift):
    # sin(x + shift * pi/2) for x >= 0.  x = q pi/2 + r, |r| <= pi/4, then sin(r)
    # or cos(r) by polynomial and the sign of the quadrant (q + shift) mod 4.  The
    # reduction: Cody-Waite with a 4-part pi/2 below SIN_LARGE, Payne-Hanek from
    # there (both computed, one selected: no branch, the loop vectorises).
    t = x * TWO_OVER_PI + ROUND_MAGIC
    q = np.int32(_as_int(t) - ROUND_MAGIC_BITS)
    qf = t - ROUND_MAGIC
    r = (((x - qf * PIO2_1) - qf * PIO2_2) - qf * PIO2_3) - qf * PIO2_4
    q_large, r_large = _reduce_large(x)
    small = x < SIN_LARGE
    q = (q if small else q_large) + shift
    r = r if small else r_large
    r2 = r * r
    ps = SIN_P
    s = r + r * r2 * (ps[0] + r2 * (ps[1] + r2 * ps[2]))
    pc = COS_P
    c = ONE + r2 * (pc[0] + r2 * (pc[1] + r2 * (pc[2] + r2 * pc[3])))
    res = c if (q & 1) != 0 else s
    res = -res if (q & 2) != 0 else res
    return res if x < INF else x - x  # inf, NaN -> NaN


@_jit
def sin_f32(x):
    x = _f32(x)
    return _xorsign(_sin_quadrant(abs(x), 0), x)


@_jit
def cos_f32(x):
    return _sin_quadrant(abs(_f32(x)), 1)


@_jit
def acos_f32(x):
    # |x| <= 1/2: pi/2 - asin(x); otherwise, with z = (1 - |x|) / 2,
    # acos(|x|) = 2 asin(sqrt(z)).  One asin polynomial serves both cases.
    x = _f32(x)
    a = abs(x)
    small = a <= HALF
    z = (ONE - a) * HALF
    w = x * x if small else z
    u = a if small else math.sqrt(z)  # NaN for |x| > 1
    p = ASIN_P
    asin_u = u + u * w * (p[0] + w * (p[1] + w * (p[2] + w * (p[3] + w * p[4]))))
    near_zero = PIO2_HI - ((-asin_u if x < ZERO else asin_u) - PIO2_LO)
    far = asin_u + asin_u
    far = far if x > ZERO else PI_HI - (far - PI_LO)
    return near_zero if small else far


@_jit
def erf_f32(x):
    # On |x|: below 1, x + x * P(x**2); otherwise 1 - exp(Q(|x|) - x**2) with Q
    # fitted to log(erfc(x)) + x**2 on [1, 4] (erf rounds to 1 beyond 3.92);
    # then the sign of x.
    x = _f32(x)
    a = abs(x)
    a = _f32(4.0) if a > _f32(4.0) else a  # NaN passes through
    a2 = a * a
    p = ERF_P
    small = a + a * (p[0] + a2 * (p[1] + a2 * (p[2] + a2 * (p[3] + a2 * (p[4] + a2 * (p[5] + a2 * p[6]))))))
    q = ERFC_Q
    log_erfc = (q[0] + a * (q[1] + a * (q[2] + a * (q[3] + a * (q[4] + a * (q[5] + a * q[6])))))) - a2
    big = ONE - exp_f32(log_erfc)
    return _xorsign(small if a < ONE else big, x)


# ---------------------------------------------------------------------------
# float64 (scalar libm; correctness only)
# ---------------------------------------------------------------------------


@_jit
def exp_f64(x):
    return math.exp(np.float64(x))


@_jit
def expm1_f64(x):
    return math.expm1(np.float64(x))


@_jit
def log_f64(x):
    return math.log(np.float64(x))


@_jit
def log1p_f64(x):
    return math.log1p(np.float64(x))


@_jit
def tanh_f64(x):
    return math.tanh(np.float64(x))


@_jit
def sigmoid_f64(x):
    # Same formulation as sigmoid_f32: exp never overflows.
    x = np.float64(x)
    e = math.exp(-abs(x))
    return (1.0 if x >= 0.0 else e) / (1.0 + e)


@_jit
def sin_f64(x):
    return math.sin(np.float64(x))


@_jit
def cos_f64(x):
    return math.cos(np.float64(x))


@_jit
def acos_f64(x):
    return math.acos(np.float64(x))


@_jit
def erf_f64(x):
    return math.erf(np.float64(x))
