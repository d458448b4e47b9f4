"""Power sums to moments: the one rule, used by capture, the sharded reduction and GO-UP.

A quantity is reduced to shifted power sums Σd, Σd², Σd³, Σd⁴ (d = x − shift)
over its finite values (:class:`PowerSums`). :func:`central_moments` turns them
into the mean and the central moments; :class:`PowerSums` turns those into the
reported :class:`Moments` (also what :func:`moments` computes directly from an array), and
:class:`CentralSums`
keeps them as central sums M_k = Σ(x − mean)^k, which merge exactly across
shards (Chan et al. 1979; Pébay 2008) whatever shift each shard used.

Pure float arithmetic on the host: no torch; importing it loads numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SUMS_WIDTH = 7
"""Fields of :class:`CentralSums` on the wire: count, mean, M2, M3, M4, min, max."""


@dataclass(frozen=True)
class Moments:
    """Moments of a whole array (finite values only), as computed on the device or host."""

    numel: int
    nonfinite: int
    mean: float
    std: float
    skew: float
    excess_kurtosis: float
    min: float
    max: float

    @property
    def n_finite(self) -> int:
        """Number of finite values the moments are computed from."""
        return self.numel - self.nonfinite

    @classmethod
    def from_central_moments(
        cls,
        *,
        numel: int,
        nonfinite: int,
        mean: float,
        m2: float,
        m3: float,
        m4: float,
        minimum: float,
        maximum: float,
    ) -> Moments:
        """Build from the mean and the 2nd-4th central moments (population, 1/n)."""
        std = math.sqrt(m2) if m2 > 0 else 0.0
        if m2 > 0:
            skew = m3 / (m2 * math.sqrt(m2))  # products overflow to inf, ** would raise
            kurt = m4 / (m2 * m2) - 3.0
        else:
            skew = kurt = float("nan")
        return cls(numel, nonfinite, mean, std, skew, kurt, minimum, maximum)


def moments(x: np.ndarray) -> Moments:
    """Moments of all finite values of ``x`` in float64 (two-pass, numerically stable).

    Parameters
    ----------
    x : array_like
        Any array; it is flattened.
    """
    a = np.asarray(x, dtype=np.float64).ravel()
    finite = np.isfinite(a)
    nonfinite = int(a.size - np.count_nonzero(finite))
    if nonfinite:
        a = a[finite]
    if a.size == 0:
        nan = float("nan")
        return Moments(int(finite.size), nonfinite, nan, nan, nan, nan, nan, nan)
    peak = float(np.max(np.abs(a)))
    unit = peak if peak > 0 else 1.0
    b = a / unit  # a sum of values near 1e307 would overflow; |b| <= 1 and the mean of b cannot
    mean_b = float(b.mean())
    mean = mean_b * unit
    centred = b - mean_b
    scale = float(np.max(np.abs(centred)))
    if scale == 0:
        return Moments(int(finite.size), nonfinite, mean, 0.0, math.nan, math.nan, mean, mean)
    c = centred / scale  # powers of values near 1e100 would overflow
    sq = c * c
    m2 = float(sq.mean())
    return Moments(
        numel=int(finite.size),
        nonfinite=nonfinite,
        mean=mean,
        std=unit * scale * math.sqrt(m2),
        skew=float((sq * c).mean()) / m2**1.5,
        excess_kurtosis=float((sq * sq).mean()) / m2**2 - 3.0,
        min=float(a.min()),
        max=float(a.max()),
    )


def central_moments(
    count: float, shift: float, s1: float, s2: float, s3: float, s4: float
) -> tuple[float, float, float, float]:
    """Mean and central moments m_k = M_k / n from shifted power sums of ``count`` > 0 values.

    ``m2`` and ``m4`` are clipped at 0 (rounding can make them slightly negative).
    """
    n = count
    d = s1 / n
    r2, r3, r4 = s2 / n, s3 / n, s4 / n
    m2 = max(r2 - d * d, 0.0)
    m3 = r3 - 3 * d * r2 + 2 * d * d * d  # products overflow to inf; ** would raise
    m4 = max(r4 - 4 * d * r3 + 6 * d * d * r2 - 3 * (d * d) * (d * d), 0.0)
    return shift + d, m2, m3, m4


@dataclass(frozen=True)
class PowerSums:
    """Sums of powers of ``x - shift`` over the finite values of a tensor.

    Two ``PowerSums`` with the same shift merge by adding fields, which is how
    sharded tensors are combined.
    """

    shift: float
    numel: int
    count: int
    s1: float
    s2: float
    s3: float
    s4: float
    minimum: float
    maximum: float

    def merge(self, other: PowerSums) -> PowerSums:
        """Sums of the union of both sets of values (shifts must agree)."""
        if self.shift != other.shift:
            raise ValueError("cannot merge power sums taken around different shifts")
        return PowerSums(
            self.shift,
            self.numel + other.numel,
            self.count + other.count,
            self.s1 + other.s1,
            self.s2 + other.s2,
            self.s3 + other.s3,
            self.s4 + other.s4,
            min(self.minimum, other.minimum),
            max(self.maximum, other.maximum),
        )

    def to_moments(self) -> Moments:
        """Mean, std, skewness, excess kurtosis, min and max of the values."""
        n = self.count
        if n == 0:
            nan = float("nan")
            return Moments(self.numel, self.numel, nan, nan, nan, nan, nan, nan)
        mean, m2, m3, m4 = central_moments(n, self.shift, self.s1, self.s2, self.s3, self.s4)
        return Moments.from_central_moments(
            numel=self.numel,
            nonfinite=self.numel - n,
            mean=mean,
            m2=m2,
            m3=m3,
            m4=m4,
            minimum=self.minimum,
            maximum=self.maximum,
        )

    @property
    def sum_of_squares(self) -> float:
        """Σ x² over the finite values (for the L2 norm), from the shifted sums."""
        c = self.shift
        return self.s2 + 2 * c * self.s1 + self.count * c * c


@dataclass(frozen=True)
class CentralSums:
    """Count, mean and central sums M_k = Σ(x − mean)^k of finite values, plus min and max."""

    count: float
    mean: float
    m2: float
    m3: float
    m4: float
    minimum: float
    maximum: float

    @classmethod
    def empty(cls) -> CentralSums:
        """The sums of no values (the identity of :meth:`merge`)."""
        return cls(0.0, 0.0, 0.0, 0.0, 0.0, math.inf, -math.inf)

    @classmethod
    def from_power_sums(cls, s: PowerSums) -> CentralSums:
        """Convert shifted power sums (any shift) to central sums."""
        n = s.count
        if n == 0:
            return cls.empty()
        mean, m2, m3, m4 = central_moments(n, s.shift, s.s1, s.s2, s.s3, s.s4)
        return cls(float(n), mean, n * m2, n * m3, n * m4, s.minimum, s.maximum)

    def to_array(self) -> np.ndarray:
        """The seven fields as a float64 array (the wire format)."""
        return np.array([self.count, self.mean, self.m2, self.m3, self.m4, self.minimum, self.maximum])

    @classmethod
    def from_array(cls, a: np.ndarray) -> CentralSums:
        """Inverse of :meth:`to_array`."""
        return cls(*(float(v) for v in a[:SUMS_WIDTH]))

    def merge(self, other: CentralSums) -> CentralSums:
        """Sums of the union (Chan et al. 1979; Pébay 2008, eqs. 2.1-2.3)."""
        na, nb = self.count, other.count
        if nb == 0:
            return self
        if na == 0:
            return other
        n = na + nb
        delta = other.mean - self.mean
        mean = self.mean + delta * nb / n
        m2 = self.m2 + other.m2 + delta**2 * na * nb / n
        m3 = (
            self.m3
            + other.m3
            + delta**3 * na * nb * (na - nb) / n**2
            + 3 * delta * (na * other.m2 - nb * self.m2) / n
        )
        m4 = (
            self.m4
            + other.m4
            + delta**4 * na * nb * (na * na - na * nb + nb * nb) / n**3
            + 6 * delta**2 * (na * na * other.m2 + nb * nb * self.m2) / n**2
            + 4 * delta * (na * other.m3 - nb * self.m3) / n
        )
        return CentralSums(
            n, mean, m2, m3, m4, min(self.minimum, other.minimum), max(self.maximum, other.maximum)
        )

    def to_power_sums(self, numel: int) -> PowerSums:
        """Power sums around the mean (s1 = 0) of a tensor with ``numel`` elements."""
        if self.count == 0:
            return PowerSums(0.0, numel, 0, 0.0, 0.0, 0.0, 0.0, math.nan, math.nan)
        return PowerSums(
            self.mean, numel, int(self.count), 0.0, self.m2, self.m3, self.m4, self.minimum, self.maximum
        )


def moment_standard_errors(z: np.ndarray, count: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Standard errors of skewness and excess kurtosis valid for the data (delta method), row-wise.

    The delta-method (influence-function) variance of the biased sample
    skewness g₁ = m₃/m₂^{3/2} and excess kurtosis g₂ = m₄/m₂² − 3 of ``count``
    i.i.d. values is E[IF²]/count, with, for a standardised value z
    (μ₃, μ₄ the standardised third and fourth moments),

    * IF₁(z) = z³ − μ₃ − 3z − (3/2) μ₃ (z² − 1),
    * IF₂(z) = z⁴ − μ₄ − 4 μ₃ z − 2 μ₄ (z² − 1),

    so Var g₁ involves moments up to order 6 and Var g₂ up to order 8. Both are
    estimated from the sample's own moments: the mean of IF² over the row
    (the infinitesimal jackknife). Under normality they reduce to the null-only
    6/n and 24/n. Cost: about 15 vectorised passes over an (m, n) array (no
    resampling). For heavy tails whose 8th moment is infinite (Student t with
    ≤ 8 degrees of freedom) the kurtosis has no finite-variance limit and the SE
    understates its spread; it still grows with the tails, unlike √(24/n).

    Parameters
    ----------
    z : ndarray, shape (m, n)
        Standardised rows (mean 0, population variance 1), e.g. the tested
        subsample of each tensor (:func:`goup_probe.stats.normal_tests.standardise`).
    count : float or ndarray, shape (m,)
        Number of values the reported skewness and kurtosis are computed from
        (the whole tensor's finite values, which may exceed the row's n).

    Returns
    -------
    skew_se, kurtosis_se : ndarray, shape (m,)
    """
    z = np.asarray(z, dtype=np.float64)
    count = np.asarray(count, dtype=np.float64)
    z2 = z * z
    mu3 = (z2 * z).mean(axis=1, keepdims=True)
    mu4 = (z2 * z2).mean(axis=1, keepdims=True)
    dev2 = z2 - 1.0
    influence_skew = z2 * z - mu3 - 3.0 * z - 1.5 * mu3 * dev2
    influence_kurt = z2 * z2 - mu4 - 4.0 * mu3 * z - 2.0 * mu4 * dev2
    var_skew = np.einsum("ij,ij->i", influence_skew, influence_skew) / z.shape[1]
    var_kurt = np.einsum("ij,ij->i", influence_kurt, influence_kurt) / z.shape[1]
    return np.sqrt(var_skew / count), np.sqrt(var_kurt / count)


def merge_all(parts: Sequence[CentralSums]) -> CentralSums:
    """Merge ``parts`` in order (the same order on every rank gives the same result)."""
    total = CentralSums.empty()
    for part in parts:
        total = total.merge(part)
    return total


def combine(parts: Sequence[CentralSums], numel: int) -> PowerSums:
    """Merge per-rank sums in rank order into the power sums of the whole tensor."""
    return merge_all(parts).to_power_sums(numel)


__all__ = [
    "SUMS_WIDTH",
    "CentralSums",
    "Moments",
    "PowerSums",
    "central_moments",
    "combine",
    "merge_all",
    "moment_standard_errors",
    "moments",
]
