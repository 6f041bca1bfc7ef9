# ruff: noqa: F405
"""Numba kernels of the verdict engine.

One kernel, :func:`_engine_block`, processes rows ``t_start..T-1`` of a block
of samples for the N devices of one call. ``VerdictEngine.update`` calls it
with T = 1 and ``VerdictEngine.run`` with the whole block, so both follow the
same code path and give bit-identical state.

State lives in float64 arrays with one row per device (or per job group);
the column layouts are the ``C_*``, ``HF_*``, ``SD_*`` and ``J_*`` constants
of ``_layout``. Missing data is NaN and every branch checks for it.
"""

from __future__ import annotations

import math

import numpy as np

from degrade._config import njit
from degrade.changepoint._kernels import _robust_onset
from degrade.core._kernels_common import _clip, _huber_var, _sorted_median
from degrade.core._kernels_cusum import _page
from degrade.core._kernels_design import _interp_log_grid
from degrade.core._kernels_peer import _loo_median

from ._layout import *  # noqa: F403


@njit(_nrt=True)
def _ring_median(S, i):
    """Median of the RING deviations of row ``i``'s ring, as ``np.median`` of them.

    The two middle order statistics are found by rank (ties broken by
    position), without the allocation of a sort; a ring with NaN takes the
    sort, which puts NaN last.
    """
    for q in range(RING):
        if math.isnan(S[i, C_RING + q]):
            buf = np.sort(S[i, C_RING : C_RING + RING])
            return 0.5 * (buf[RING // 2 - 1] + buf[RING // 2])
    lo = NAN
    hi = NAN
    for a in range(RING):
        v = S[i, C_RING + a]
        r = 0
        for b in range(RING):
            w = S[i, C_RING + b]
            if w < v or (w == v and b < a):
                r += 1
        if r == RING // 2 - 1:
            lo = v
        elif r == RING // 2:
            hi = v
    return 0.5 * (lo + hi)


@njit(_nrt=False)
def _episode_degraded(mean, n, sig, mu0, mu1, xbig, se0):
    """Whether an episode's slowdown estimate makes it ``degraded`` (else suspect).

    ``mean`` (log units) is the mean deviation over ``n`` samples since the
    onset, ``sig`` the channel's long-run sigma. Degraded needs the point
    estimate past the midpoint between ``healthy_offset`` and
    ``min_slowdown`` *and* ``min_slowdown`` within two standard errors
    (``sig / sqrt(n)``, and ``se0`` of the level it is measured from) of
    it, so a long, well-measured 4.5 % episode stays
    suspect while a short one at about ``min_slowdown`` keeps the benefit of
    the doubt. An alarm of the window-median rule alone (``xbig``) is never
    degraded: its threshold assumes Gaussian tails.
    """
    if xbig != 0.0:
        return False
    if not (mean >= 0.5 * (mu0 + mu1)):
        return False
    se = sig / math.sqrt(max(n, 1.0)) if math.isfinite(sig) else 0.0
    if math.isfinite(se0):
        se = math.sqrt(se * se + se0 * se0)
    return mean + 2.0 * se >= mu1


@njit(_nrt=False)
def _episode_mean(S, i, own, P):
    """Mean deviation of the episode since its onset (log units).

    A device that ran faster than its peers before the change is measured
    against its own level before onset (the peers' gap understates it).
    """
    mean = S[i, C_ASUM] / max(S[i, C_AN], 1.0)
    if not own and S[i, C_BEFORE] < 0.0:
        # at most healthy_offset faster: a bimodal job's fast half is not
        # "its own baseline" but another population
        mean -= max(S[i, C_BEFORE], -P[P_MU0])
    return mean


@njit(_nrt=False)
def _before_se(S, i, own):
    """Standard error of the level an episode is measured from (0 when measured against peers)."""
    return S[i, C_BSE] if (not own and S[i, C_BEFORE] < 0.0) else 0.0


@njit(_nrt=False)
def _judge_episode(S, i, own, P):
    """Judge the episode in progress degraded or not, with hysteresis.

    It becomes degraded when :func:`_episode_degraded` says so and stays
    degraded until its estimate is clearly short of ``min_slowdown``
    (``mean + 3 se < mu1``, against ``mean + 2 se >= mu1`` to enter), so a
    slowdown right at the threshold does not flap between suspect and
    degraded (a true 5 % slowdown at ``min_slowdown = 0.05`` stays degraded)
    while a long, well-measured 4.5 % episode still ends suspect.
    """
    mean = _episode_mean(S, i, own, P)
    if S[i, C_EPDEG] == 0.0:
        mu0 = 0.0 if own else P[P_MU0]
        if _episode_degraded(mean, S[i, C_AN], S[i, C_SIG], mu0, P[P_MU1], S[i, C_XBIG], _before_se(S, i, own)):
            S[i, C_EPDEG] = 1.0
        return
    sig = S[i, C_SIG]
    se = sig / math.sqrt(max(S[i, C_AN], 1.0)) if math.isfinite(sig) else 0.0
    se0 = _before_se(S, i, own)
    se = math.sqrt(se * se + se0 * se0)
    if mean + 3.0 * se < P[P_MU1]:
        S[i, C_EPDEG] = 0.0


@njit(_nrt=False)
def _latch_episode(S, i, own, P):
    """Keep the episode now ending for the batch latch: the first degraded one.

    Failing that, the first that went past ``min_slowdown`` without being
    confirmed (kind 1: suspect). A later, smaller episode (or a recovered
    blip below ``min_slowdown``) then cannot overwrite the evidence the
    batch latch reports.
    """
    if S[i, C_LATCHED] == 2.0:
        return
    mean = _episode_mean(S, i, own, P)
    if S[i, C_EPDEG] != 0.0:
        kind = 2.0
    elif mean >= P[P_MU1] and S[i, C_LATCHED] == 0.0:
        # a short excursion past min_slowdown that the CUSUM never confirmed
        # (the window-median rule's): suspect, unless a degraded one follows
        kind = 1.0
    else:
        return
    S[i, C_LATCHED] = kind
    S[i, C_L_ONSTEP] = S[i, C_ONSTEP]
    S[i, C_L_ONTIME] = S[i, C_ONTIME]
    S[i, C_L_DETSTEP] = S[i, C_DETSTEP]
    S[i, C_L_DETTIME] = S[i, C_DETTIME]
    S[i, C_L_ASUM] = S[i, C_ASUM]
    S[i, C_L_AN] = S[i, C_AN]
    S[i, C_L_ENDSTEP] = S[i, C_ENDSTEP]
    S[i, C_L_ENDTIME] = S[i, C_ENDTIME]
    S[i, C_L_PEAK] = S[i, C_PEAK]
    S[i, C_L_XS] = S[i, C_XS]
    S[i, C_L_XH] = S[i, C_XH]
    S[i, C_L_XBIG] = S[i, C_XBIG]
    S[i, C_L_SIG] = S[i, C_SIG]
    S[i, C_L_LOC] = S[i, C_BEFORE]
    S[i, C_L_BSE] = S[i, C_BSE]


@njit(_nrt=True)
def _refine_onset(S, HB, i):
    """Onset of the change behind the alarm now raised, from the channel's history.

    The last ``HIST`` deviations (chronological) go to
    :func:`degrade.changepoint._kernels._robust_onset`, which takes the better
    of a step and a ramp; the CUSUM's own onset (where its statistic last
    left zero) is late for drifts, whose deviation crosses the reference
    long after it began. Returns the history slot of the onset, or -1 when
    the history is too short.
    """
    hn = int(S[i, C_HN])
    m = hn if hn < HIST else HIST
    if m < 2 * HIST_MIN + 1:
        return -1
    y = np.empty(m)
    start = hn - m
    for q in range(m):
        y[q] = HB[i, (start + q) % HIST]
    tau = _robust_onset(y, HIST_MIN, m - 1)
    return (start + tau) % HIST


@njit(_nrt=False)
def _channel_update(S, HB, i, x, own, step, ts, P, dz_grid, hz_grid):
    """Feed one finite sample ``x`` (log units, larger = slower) to channel row ``i``.

    ``own`` channels compare ``x`` with their own robust baseline (temporal
    evidence); the others receive a deviation from peers (spatial evidence)
    whose healthy level may sit anywhere up to ``mu0``.

    The sequential test is Page's CUSUM (:func:`degrade.core._kernels_cusum._page`)
    on AR(1)-prewhitened, winsorised scores: with ``phi`` the deviation's
    lag-1 autocorrelation, the score is ``((d_t - mu0) - phi (d_{t-1} -
    mu0)) / sigma_e`` clipped at ``±winsor``, minus ``k = (mu1 - mu0) / (2
    sigma_lr)``, where ``sigma_e`` is the innovation scale. At level ``mu``
    the unclipped score has mean ``(mu - mu0) / sigma_lr`` with ``sigma_lr =
    sigma_e / (1 - phi)`` the long-run sigma, and for AR(1) noise the scores
    are independent, so ``h`` comes from the i.i.d. design at the shift
    ``(mu1 - mu0) / sigma_lr`` (:func:`degrade.core.design.upper_h_grid`). ``sigma_e`` is a Huber
    (proposal 2) scale, so clipped scores of heavy-tailed noise have the
    Gaussian variance the design assumes.
    """
    n = S[i, C_N]
    if own:
        delta = P[P_MU1]
        dv = x - S[i, C_LOC] if n > 0 else 0.0
    else:
        delta = P[P_MU1] - P[P_MU0]
        dv = x
    s_prev = S[i, C_S]
    warm = n >= P[P_WARM]
    prev_dv = S[i, C_LASTX]
    # the onset history (deviations, steps, times)
    hq = int(S[i, C_HN]) % HIST
    HB[i, hq] = dv
    HB[i, HIST + hq] = step
    HB[i, 2 * HIST + hq] = ts
    S[i, C_HN] += 1.0
    if warm:
        if (s_prev == 0.0 or (S[i, C_ALARM] == 0.0 and s_prev < 0.5 * S[i, C_H])) and (
            int(n) % 8 == 0 or math.isnan(S[i, C_H])
        ):
            # every 8th sample (the estimates forget over hundreds; this keeps
            # six square roots off the per-sample path), h is re-designed
            # when sigma_lr moved by more than 1 %: between excursions either way; during one (below h/2,
            # no alarm) only towards a smaller sigma, so a fault cannot widen
            # its own test while a statistic that never returns to zero (a
            # device slow from its first step) still leaves the cautious
            # design of its warm-up for that of its learned noise. The
            # statistic is rescaled to the new sigma_e so its evidence keeps
            # its meaning
            phi = _phi_upper(S[i, C_AC], n, P)
            # the same margin for the scale: the false-alarm rate is convex
            # in its error too, and more so the higher the target (at 1e9 an
            # unbiased 4 % error would cost ~4x)
            n_eff = min(n, P[P_NEFF])
            sig_e = math.sqrt(S[i, C_SCALE]) * (1.0 + 1.0 / math.sqrt(max(n_eff, 1.0)))
            sig_m = max(sig_e / math.sqrt(1.0 - phi * phi), P[P_MINSCALE])
            sig_new = sig_m * math.sqrt((1.0 + phi) / (1.0 - phi))
            sig_old = S[i, C_SIG]
            if not (abs(sig_new - sig_old) <= 0.01 * sig_old) and (s_prev == 0.0 or sig_new < sig_old):
                sige_new = sig_m * math.sqrt(1.0 - phi * phi)
                if s_prev > 0.0:
                    s_prev *= S[i, C_SIGE] / sige_new
                S[i, C_SIG] = sig_new
                S[i, C_SIGE] = sige_new
                S[i, C_PHIU] = phi
                S[i, C_H] = _interp_log_grid(delta / sig_new, dz_grid, hz_grid)
            # the healthy level: up to healthy_offset above peers, and for a
            # device that runs faster than its peers, up to healthy_offset
            # above its own level (a 5 % slowdown of a device 2 % faster than
            # its peers lands at +3 %, which peers alone would call healthy)
            # (its level by an upper confidence bound: a noisy location must
            # not pull the reference down, which would raise the false-alarm
            # rate of every device that wanders)
            if own:
                S[i, C_MU0] = 0.0
            else:
                n_eff = min(n, P[P_NEFF])
                up = S[i, C_LOC] + 2.0 * S[i, C_SIG] / math.sqrt(max(n_eff, 1.0))
                S[i, C_MU0] = P[P_MU0] + max(min(up, 0.0), -P[P_MU0])
        mu0 = S[i, C_MU0]
        sig = S[i, C_SIG]
        h = S[i, C_H]
        phiu = S[i, C_PHIU]
        # the innovation under the healthy hypothesis (level mu0), winsorised
        # symmetrically, minus the reference k = delta / (2 sigma_lr):
        # clipping after subtracting k would cut the healthy side's tail and
        # keep the other, biasing the scores upwards
        e = dv - mu0
        if math.isfinite(prev_dv):
            e -= phiu * (prev_dv - mu0)
        else:
            e *= 1.0 - phiu
        z = _clip(e / S[i, C_SIGE], P[P_CLIP]) - 0.5 * delta / sig
        s_new = _page(s_prev, z)
        if s_new > P[P_CAP] * h:
            s_new = P[P_CAP] * h
        if s_prev == 0.0 and s_new > 0.0:
            S[i, C_LOC0] = S[i, C_LOC]
            if n == P[P_WARM]:
                # rising from the first judged sample: the device was off from its first
                S[i, C_CSTEP] = S[i, C_FSTEP]
                S[i, C_CTIME] = S[i, C_FTIME]
            else:
                S[i, C_CSTEP] = step
                S[i, C_CTIME] = ts
            S[i, C_SSUM] = 0.0
            S[i, C_SN] = 0.0
        if s_new > 0.0:
            S[i, C_SSUM] += dv
            S[i, C_SN] += 1.0
        S[i, C_S] = s_new
        if s_new > h:
            S[i, C_HIT] += 1.0
        else:
            S[i, C_HIT] = 0.0
        # large-shift rule: the median of the last RING innovations (the
        # prewhitened deviations e above, in log units), whose standard error
        # is ~1.25 sigma_e / sqrt(RING) (median efficiency). A plateau of
        # level mu (a straggler for ten steps) keeps its innovations at
        # (1 - phi)(mu - mu0), so the rule has the power of a median of
        # deviations against sigma_lr; but a single heavy-tailed spike and
        # its AR(1) echo are one large innovation, which a median of RING
        # ignores (four of eight would have to be large), so the rule keeps
        # its false-alarm rate under t(3) noise, where a median of the
        # deviations themselves does not
        k = int(S[i, C_RN]) % RING
        S[i, C_RING + k] = e
        S[i, C_RING + RING + k] = step
        S[i, C_RING + 2 * RING + k] = ts
        S[i, C_RN] = S[i, C_RN] + 1.0
        wm = NAN
        big = False
        sige = S[i, C_SIGE]
        big_h = P[P_BIGZ] * sige
        if S[i, C_RN] >= RING and delta * (1.0 - phiu) < big_h:
            # the rule: more than half of the last RING innovations above
            # big_h (NaN counts as above, as it would sort last); P_BIGZ is
            # the binomial quantile that makes this happen once per arl0
            # samples for Gaussian innovations (the normal approximation of a
            # median of eight is three times too optimistic there)
            above = 0
            for q in range(RING):
                if not (S[i, C_RING + q] <= big_h):
                    above += 1
            if above > RING // 2:
                wm = _ring_median(S, i)
                big = not math.isnan(wm)
        if S[i, C_ALARM] == 0.0:
            if big and S[i, C_HIT] < P[P_PERSIST]:
                S[i, C_ALARM] = 1.0
                # onset: the first sample of the window whose innovation is
                # above the threshold; the slowdown: the mean deviation from
                # there (the history's last RING entries are the ring's)
                S[i, C_ASUM] = 0.0
                S[i, C_AN] = 0.0
                hn = int(S[i, C_HN])
                for q in range(RING):
                    o = (int(S[i, C_RN]) - RING + q) % RING
                    if S[i, C_AN] == 0.0 and S[i, C_RING + o] <= big_h:
                        continue
                    if S[i, C_AN] == 0.0:
                        S[i, C_ONSTEP] = S[i, C_RING + RING + o]
                        S[i, C_ONTIME] = S[i, C_RING + 2 * RING + o]
                    S[i, C_ASUM] += HB[i, (hn - RING + q) % HIST]
                    S[i, C_AN] += 1.0
                S[i, C_XS] = wm / sige
                S[i, C_XH] = big_h / sige
                S[i, C_XBIG] = 1.0
                S[i, C_EPDEG] = 0.0
                S[i, C_BEFORE] = S[i, C_LOC]
                S[i, C_BSE] = 0.0
                S[i, C_DETSTEP] = step
                S[i, C_DETTIME] = ts
                S[i, C_CLEAR] = 0.0
                S[i, C_PEAK] = max(s_new / h, wm / big_h)
                S[i, C_ENDSTEP] = NAN
                S[i, C_ENDTIME] = NAN
                S[i, C_EPISODES] += 1.0
            elif S[i, C_HIT] >= P[P_PERSIST]:
                S[i, C_ALARM] = 1.0
                S[i, C_XBIG] = 0.0
                S[i, C_EPDEG] = 0.0
                _confirm(S, HB, i, s_new, h, n, P)
                _judge_episode(S, i, own, P)
                S[i, C_DETSTEP] = step
                S[i, C_DETTIME] = ts
                S[i, C_PEAK] = s_new / h
                S[i, C_ENDSTEP] = NAN
                S[i, C_ENDTIME] = NAN
                S[i, C_EPISODES] += 1.0
        elif S[i, C_XBIG] != 0.0 and S[i, C_HIT] >= P[P_PERSIST]:
            # the CUSUM confirms an alarm the window-median rule raised: from
            # here on the episode is the CUSUM's (its onset, mean and crossing)
            S[i, C_XBIG] = 0.0
            _confirm(S, HB, i, s_new, h, n, P)
            _judge_episode(S, i, own, P)
            if s_new / h > S[i, C_PEAK]:
                S[i, C_PEAK] = s_new / h
        else:
            S[i, C_ASUM] += dv
            S[i, C_AN] += 1.0
            _judge_episode(S, i, own, P)
            if s_new / h > S[i, C_PEAK]:
                S[i, C_PEAK] = s_new / h
            if s_new < 0.5 * h and not big:
                S[i, C_CLEAR] += 1.0
            else:
                S[i, C_CLEAR] = 0.0
            if S[i, C_CLEAR] >= P[P_RECOVER]:
                S[i, C_ALARM] = 0.0
                S[i, C_ENDSTEP] = step
                S[i, C_ENDTIME] = ts
                _latch_episode(S, i, own, P)
    else:
        s_new = 0.0
    # nothing is learned during an alarm, and the location only while the
    # statistic is low, so a fault cannot teach the detector that it is
    # normal; scale and phi learn from every other sample, since leaving out
    # the samples that lift S (the positive runs) would bias both down
    if n == 0:
        S[i, C_FSTEP] = step
        S[i, C_FTIME] = ts
    if S[i, C_ALARM] == 0.0:
        _learn_channel(S, i, x, n, not warm or s_new < 0.5 * S[i, C_H], P)
    S[i, C_N] = n + 1.0
    S[i, C_LASTX] = dv
    S[i, C_LASTSTEP] = step


@njit(_nrt=False)
def _phi_upper(phi, n, P):
    """``phi`` plus one standard error ``sqrt((1 - phi^2) / n_eff)``, at most ``P_PHIMAX``.

    The long-run sigma ``sigma_e / (1 - phi)`` is convex in ``phi``, so an
    unbiased but noisy estimate still under-states it on average and the
    false-alarm rate rises (most at phi near 1 and early in a run, when
    ``n_eff`` is small); one standard error of margin pays for that.
    """
    n_eff = min(n, P[P_NEFF])
    ph = phi + math.sqrt(max(1.0 - phi * phi, 0.0) / max(n_eff, 1.0))
    return ph if ph < P[P_PHIMAX] else P[P_PHIMAX]


@njit(_nrt=False)
def _confirm(S, HB, i, s_new, h, n, P):
    """The CUSUM raised (or confirmed) the alarm: its onset, refined; its mean since then."""
    S[i, C_ONSTEP] = S[i, C_CSTEP]
    S[i, C_ONTIME] = S[i, C_CTIME]
    S[i, C_ASUM] = S[i, C_SSUM]
    S[i, C_AN] = S[i, C_SN]
    from_start = S[i, C_CSTEP] == S[i, C_FSTEP]
    if not from_start:
        q = _refine_onset(S, HB, i)
        if q >= 0 and HB[i, HIST + q] < S[i, C_CSTEP]:
            # the change began before the CUSUM left zero (a drift): move the
            # onset back and measure the slowdown from there
            S[i, C_ONSTEP] = HB[i, HIST + q]
            S[i, C_ONTIME] = HB[i, 2 * HIST + q]
            hn = int(S[i, C_HN])
            tot = 0.0
            cnt = 0.0
            p = q
            while True:
                tot += HB[i, p]
                cnt += 1.0
                if p == (hn - 1) % HIST:
                    break
                p = (p + 1) % HIST
            S[i, C_ASUM] = tot
            S[i, C_AN] = cnt
    # the level before the onset: the running location when the CUSUM
    # left zero (an average of ~1,000 samples, learned before the change),
    # or for a drift whose onset moved back, the history before that onset
    # (the location then already followed part of the ramp); with the
    # standard error of that level, so that the slowdown's uncertainty
    # includes it
    n_eff = min(n, P[P_NEFF])
    S[i, C_BEFORE] = S[i, C_LOC0] if math.isfinite(S[i, C_LOC0]) else S[i, C_LOC]
    S[i, C_BSE] = S[i, C_SIG] / math.sqrt(max(n_eff, 1.0))
    if S[i, C_ONSTEP] < S[i, C_CSTEP]:
        hn = int(S[i, C_HN])
        m = hn if hn < HIST else HIST
        tot = 0.0
        cnt = 0
        for q in range(m):
            p = (hn - m + q) % HIST
            if HB[i, HIST + p] < S[i, C_ONSTEP]:
                tot += HB[i, p]
                cnt += 1
        if cnt >= HIST_MIN:
            S[i, C_BEFORE] = tot / cnt
            S[i, C_BSE] = S[i, C_SIG] / math.sqrt(cnt)
    # the statistic and h at the crossing: h is re-designed between
    # excursions, so the reason must not pair a later h with it
    S[i, C_XS] = s_new
    S[i, C_XH] = h
    S[i, C_CLEAR] = 0.0


@njit(_nrt=False)
def _learn_channel(S, i, x, n, move_loc, P):
    """Robust location, AR(1) coefficient and innovation scale of the channel's input.

    Location: EWMA of residuals winsorised at ``winsor`` marginal sigmas.
    ``phi``: winsorised lag-1 autocorrelation, with a longer memory than the
    scale and Kendall's small-sample bias ``(1 + 3 phi) / n`` added back,
    clipped to ``[0, P_PHIMAX]``. Innovation scale: Huber's proposal 2 on
    the prewhitened residuals, kept as a variance (``C_SCALE``:
    :func:`degrade.core._kernels_common._huber_var`, no square root per
    sample). Location, ``phi`` and scale share the long memory
    (``P_LAMPHI``: four times ``scale_halflife``); gains are ``1 / (n + 1)``
    (a plain mean) until they reach that floor.
    """
    if n == 0:
        S[i, C_LOC] = x
        S[i, C_SCALE] = NAN
        S[i, C_PREV] = NAN
        S[i, C_AC] = 0.0
        S[i, C_SQ] = 0.0
        S[i, C_XP] = 0.0
        return
    r = x - S[i, C_LOC]
    v = S[i, C_SCALE]
    if math.isnan(v):
        # two samples: |x1 - x0| has mean 2 sigma / sqrt(pi)
        sd = abs(r) * 0.886227
        S[i, C_SCALE] = sd * sd
        S[i, C_SQ] = 0.25 * r * r
        S[i, C_LOC] += 0.5 * r
        S[i, C_PREV] = 0.5 * r
        return
    # plain means until the gain reaches its floor (no division after that)
    lphi = P[P_LAMPHI]
    if n * lphi < 1.0:
        lphi = 1.0 / (n + 1.0)
    phi = S[i, C_AC]
    q2 = 1.0 - phi * phi
    fl = 0.01 * P[P_MINSCALE] * P[P_MINSCALE] * q2
    v_e = v if v > fl else fl
    c = P[P_CLIP]
    # winsorise at c marginal sigmas (marginal variance v_e / (1 - phi^2)),
    # compared in squares: the square root only when it clips
    rc = r
    if r * r * q2 > c * c * v_e:
        lim = c * math.sqrt(v_e / q2)
        rc = lim if r > 0.0 else -lim
    # the location forgets as slowly as phi: a location that follows the
    # AR(1) wander itself would absorb low frequencies and bias phi down
    if move_loc:
        S[i, C_LOC] += lphi * rc
    pv = S[i, C_PREV]
    if not math.isnan(pv):
        e = rc - phi * pv
        S[i, C_SCALE] = _huber_var(v_e, e * e, lphi, c * c, P[P_WINK])
        S[i, C_SQ] += lphi * (rc * rc - S[i, C_SQ])
        S[i, C_XP] += lphi * (pv * rc - S[i, C_XP])
        if S[i, C_SQ] > 0.0:
            ph = S[i, C_XP] / S[i, C_SQ]
            inv_n = P[P_INVNEFF] if n >= P[P_NEFF] else 1.0 / n
            ph += (1.0 + 3.0 * max(ph, 0.0)) * inv_n
            if ph < 0.0:
                ph = 0.0
            elif ph > P[P_PHIMAX]:
                ph = P[P_PHIMAX]
            S[i, C_AC] = ph
    S[i, C_PREV] = rc


@njit(_nrt=False)
def _stall_update(S, i, d, u, loo_rate, step, ts, P):
    """Bernoulli CUSUM on intermittent slow steps.

    ``u``: this step's innovation (AR(1)-prewhitened deviation from peers)
    exceeded the slow-step threshold. Intermittent slow steps are clipped
    away by the winsorised level CUSUM; this channel counts them instead.
    Prewhitening makes the exceedances of healthy noise independent, so the
    increments are the log-likelihood ratio of a slow-step rate p1
    (``intermittent_rate``) against a healthy rate p0, and by Lorden's bound
    ``h = log(arl0)`` keeps the in-control ARL above ``arl0`` whenever the
    device's true healthy rate is at most p0. p0 is the larger of
    ``stall_rate`` and 1.5 times its peers' own rate (``loo_rate``: the
    leave-one-out share of peers exceeding, averaged over time), so a job
    whose every rank has GC pauses or heavy tails raises its own bar while a
    device stalling more often than its peers still stands out.

    Fields reused for this channel: ``C_LOC`` the peers' rate, ``C_SCALE``
    the p0 in use, ``C_PREV``/``C_AC`` the increments, ``C_SQ``/``C_XP`` the
    slow steps of the episode and their summed deviation.
    """
    n = S[i, C_N]
    if loo_rate != 0.0 or S[i, C_LOC] > 1e-12:
        lam = P[P_LAMRATE]
        if n * lam < 1.0:
            lam = 1.0 / (n + 1.0)
        S[i, C_LOC] += lam * (loo_rate - S[i, C_LOC])
    p0 = max(P[P_STALL_P0], 1.5 * S[i, C_LOC])
    if p0 != S[i, C_SCALE] and not (abs(p0 - S[i, C_SCALE]) <= 0.01 * S[i, C_SCALE]):
        p1 = max(P[P_STALL_P1], 2.0 * p0)
        S[i, C_SCALE] = p0
        S[i, C_PREV] = math.log(p1 / p0)
        S[i, C_AC] = math.log((1.0 - p1) / (1.0 - p0))
    s_prev = S[i, C_S]
    h = P[P_STALL_H]
    s_new = s_prev + (S[i, C_PREV] if u else S[i, C_AC])
    if s_new < 0.0:
        s_new = 0.0
    if s_new > P[P_CAP] * h:
        s_new = P[P_CAP] * h
    if n >= P[P_WARM]:
        if s_prev == 0.0 and s_new > 0.0:
            S[i, C_CSTEP] = step
            S[i, C_CTIME] = ts
            S[i, C_SSUM] = 0.0
            S[i, C_SN] = 0.0
            S[i, C_B_NSLOW] = 0.0
            S[i, C_B_XSLOW] = 0.0
        if s_new > 0.0:
            S[i, C_SSUM] += d
            S[i, C_SN] += 1.0
            if u:
                S[i, C_B_NSLOW] += 1.0
                S[i, C_B_XSLOW] += d
        S[i, C_S] = s_new
        S[i, C_H] = h
        if S[i, C_ALARM] != 0.0 and u:
            S[i, C_SQ] += 1.0
            S[i, C_XP] += d
        if S[i, C_ALARM] == 0.0:
            if s_new > h:
                S[i, C_ALARM] = 1.0
                S[i, C_ONSTEP] = S[i, C_CSTEP]
                S[i, C_ONTIME] = S[i, C_CTIME]
                S[i, C_DETSTEP] = step
                S[i, C_DETTIME] = ts
                S[i, C_ASUM] = S[i, C_SSUM]
                S[i, C_AN] = S[i, C_SN]
                S[i, C_CLEAR] = 0.0
                S[i, C_PEAK] = s_new / h
                S[i, C_XS] = s_new
                S[i, C_XH] = h
                S[i, C_ENDSTEP] = NAN
                S[i, C_ENDTIME] = NAN
                S[i, C_EPISODES] += 1.0
                # the episode's slow steps: those since its onset
                S[i, C_SQ] = S[i, C_B_NSLOW]
                S[i, C_XP] = S[i, C_B_XSLOW]
                S[i, C_EPDEG] = 0.0
        else:
            S[i, C_ASUM] += d
            S[i, C_AN] += 1.0
            if s_new / h > S[i, C_PEAK]:
                S[i, C_PEAK] = s_new / h
            if s_new == 0.0:
                S[i, C_ALARM] = 0.0
                S[i, C_ENDSTEP] = step
                S[i, C_ENDTIME] = ts
        if S[i, C_ALARM] != 0.0 and S[i, C_EPDEG] == 0.0:
            # the episode qualifies as an intermittent fault (degraded) once
            # its slow steps are on average at least intermittent_min above
            # peers and their share of its steps is past the midpoint of p0
            # and p1 (as the level test wants its estimate past the midpoint
            # of healthy_offset and min_slowdown; the catalogue's 5x stalls
            # on 4 % of steps qualify); the CUSUM crossing already made their
            # count significant at arl0. Until then it is suspect, and if it
            # recovers unqualified, history
            nq = S[i, C_SQ]
            p0 = S[i, C_SCALE]
            mid = 0.5 * (p0 + max(P[P_STALL_P1], 2.0 * p0))
            if nq >= mid * S[i, C_AN] and S[i, C_XP] >= nq * P[P_STALLMIN]:
                S[i, C_EPDEG] = 1.0
                S[i, C_LATCHED] = 2.0
        if u:
            S[i, C_HIT] += 1.0  # slow steps counted since the start
    S[i, C_N] = n + 1.0
    S[i, C_LASTX] = d
    S[i, C_LASTSTEP] = step


@njit(_nrt=False)
def _stall_exceeds(SB, ST, i, dv, P):
    """Whether peer deviation ``dv`` marks an intermittent slow step.

    A slow step stands out from the device's *recent* level: ``dv`` minus a
    fast, winsorised EWMA of its own deviations (gain 1/4, so the level
    follows a persistent shift within a few steps, which is the level
    test's business, and the AR(1) wander of healthy noise, while single
    slow steps barely move it). The excess must pass both ``P_STALL`` (log
    units, from ``intermittent_min``) and ``P_STALLQ`` innovation sigmas of
    the peer channel.
    """
    lev = SB[i, C_B_LEVEL]
    if math.isnan(lev):
        SB[i, C_B_LEVEL] = dv
        return False
    e = dv - lev
    thr = P[P_STALL]
    SB[i, C_B_LEVEL] = lev + 0.25 * _clip(e, thr)
    sige = ST[i, C_SIGE]
    if not math.isfinite(sige):
        return False
    # prewhitened with the peer channel's AR(1) coefficient: one large
    # innovation of AR(0.8) noise keeps dv - lev above the threshold for a
    # dozen steps, and that run of dependent exceedances alone crossed
    # Lorden's h (13 false degraded on 1,024 GPUs x 1e5 steps of t(3)
    # AR(0.8) noise); its innovations exceed once
    phi = ST[i, C_PHIU]
    prev = SB[i, C_LASTX]
    if math.isfinite(phi) and math.isfinite(prev):
        e -= phi * (prev - lev)
    return e > thr and e > P[P_STALLQ] * sige


@njit(_nrt=False)
def _level(SH, i, k, hit, need, recover, step, ts, val):
    """Persistence and hysteresis for one hard signal (present / absent this sample)."""
    if hit:
        if SH[i, k, HF_HIT] == 0.0:
            SH[i, k, HF_CSTEP] = step
            SH[i, k, HF_CTIME] = ts
        SH[i, k, HF_HIT] += 1.0
        SH[i, k, HF_CLEAR] = 0.0
        SH[i, k, HF_VAL] = val
        if SH[i, k, HF_ACTIVE] == 0.0 and SH[i, k, HF_HIT] >= need:
            SH[i, k, HF_ACTIVE] = 1.0
            SH[i, k, HF_EVER] = 1.0
            SH[i, k, HF_ONSTEP] = SH[i, k, HF_CSTEP]
            SH[i, k, HF_ONTIME] = SH[i, k, HF_CTIME]
            SH[i, k, HF_DETSTEP] = step
            SH[i, k, HF_DETTIME] = ts
    else:
        SH[i, k, HF_HIT] = 0.0
        if SH[i, k, HF_ACTIVE] != 0.0:
            SH[i, k, HF_CLEAR] += 1.0
            if recover > 0 and SH[i, k, HF_CLEAR] >= recover:
                SH[i, k, HF_ACTIVE] = 0.0


@njit(_nrt=False)
def _get(C, p, t, j):
    """Counter plane ``p`` (negative: column absent) at row t, device j."""
    if p < 0:
        return NAN
    return C[p, t, j]


@njit
def _hard_sample(C, t, j, i, pidx, st, ts, SH, SD, P, hits, hvals, hneed, hrec):
    """Hard signals of one counter sample; returns whether it held any value.

    Each signal is reduced to present (1) / absent (0) / unknown (NaN) and then
    passes through one persistence/hysteresis loop, so ``_level`` has a single
    call site (numba would otherwise specialise it per constant).
    """
    persist = P[P_PERSIST]
    recover = P[P_RECOVER]
    any_val = False
    for k in range(H_KINDS):
        hits[k] = NAN
        hvals[k] = NAN
        hneed[k] = persist
        hrec[k] = recover
    util = _get(C, pidx[M_UTIL], t, j)
    rs = _get(C, pidx[M_REASONS], t, j)
    bits = -1
    if math.isfinite(rs) and rs >= 0.0:
        bits = np.int64(rs)
        any_val = True
    idle = -1  # unknown
    if bits >= 0 and (bits & B_IDLE) != 0:
        idle = 1
    elif math.isfinite(util):
        idle = 1 if util < P[P_IDLE] else 0
    elif bits >= 0:
        idle = 0
    if idle >= 0:
        SD[i, SD_IDLE] = idle
    if math.isfinite(util):
        any_val = True
    if bits >= 0:
        hits[H_HW_SLOWDOWN] = 1.0 if (bits & B_HW_SLOWDOWN) != 0 else 0.0
        hits[H_HW_THERMAL] = 1.0 if (bits & B_HW_THERMAL) != 0 else 0.0
        hits[H_POWER_BRAKE] = 1.0 if (bits & B_POWER_BRAKE) != 0 else 0.0
        hits[H_SW_THERMAL] = 1.0 if (bits & B_SW_THERMAL) != 0 else 0.0
        hits[H_SW_POWER] = 1.0 if (bits & B_SW_POWER) != 0 else 0.0
        for k in (H_HW_SLOWDOWN, H_HW_THERMAL, H_POWER_BRAKE, H_SW_THERMAL, H_SW_POWER):
            hvals[k] = rs
        hneed[H_SW_THERMAL] = P[P_WEAKP]
        hneed[H_SW_POWER] = P[P_WEAKP]
    w = _get(C, pidx[M_PCIE_WIDTH], t, j)
    wm = _get(C, pidx[M_PCIE_WIDTH_MAX], t, j)
    if math.isfinite(w) and math.isfinite(wm) and wm > 0.0:
        any_val = True
        hits[H_PCIE_WIDTH] = 1.0 if w < wm else 0.0
        hvals[H_PCIE_WIDTH] = w
    gn = _get(C, pidx[M_PCIE_GEN], t, j)
    gm = _get(C, pidx[M_PCIE_GEN_MAX], t, j)
    if math.isfinite(gn) and math.isfinite(gm) and gm > 0.0:
        any_val = True
        # links drop to a lower generation to save power when idle: judge busy samples only
        if idle == 0:
            hits[H_PCIE_GEN] = 1.0 if gn < gm else 0.0
            hvals[H_PCIE_GEN] = gn
    # monotone error counters: any rise is evidence, a drop is a reset
    nv = NAN
    for m in (M_NVLINK_CRC, M_NVLINK_REPLAY, M_NVLINK_RECOVERY):
        x = _get(C, pidx[m], t, j)
        if math.isfinite(x):
            nv = x if math.isnan(nv) else nv + x
    for q in range(5):
        if q == 0:
            k, pk, v = H_PCIE_REPLAY, SD_P_REPLAY, _get(C, pidx[M_PCIE_REPLAY], t, j)
        elif q == 1:
            k, pk, v = H_NVLINK, SD_P_NVLINK, nv
        elif q == 2:
            k, pk, v = H_ECC_CORRECTED, SD_P_ECCC, _get(C, pidx[M_ECC_CORRECTED], t, j)
        elif q == 3:
            k, pk, v = H_ROWS_UNCORRECTABLE, SD_P_ROWSU, _get(C, pidx[M_ROWS_UNCORRECTABLE], t, j)
        else:
            k, pk, v = H_ECC_UNCORRECTED, SD_P_ECCU, _get(C, pidx[M_ECC_UNCORRECTED], t, j)
        if not math.isfinite(v):
            continue
        any_val = True
        prev = SD[i, pk]
        SD[i, pk] = v
        if math.isnan(prev):
            continue
        d = v - prev
        up = d > 0.0
        SH[i, k, HF_RATE] += P[P_CLAM] * ((1.0 if up else 0.0) - SH[i, k, HF_RATE])
        if up:
            SH[i, k, HF_TOTAL] += d
        hits[k] = 1.0 if up else 0.0
        hvals[k] = d
        hneed[k] = 1.0
        hrec[k] = P[P_XIDHOLD] if k == H_ECC_UNCORRECTED else P[P_CRECOVER]
    v = _get(C, pidx[M_REMAP_PENDING], t, j)
    if math.isfinite(v):
        any_val = True
        hits[H_REMAP_PENDING] = 1.0 if v > 0.0 else 0.0
        hvals[H_REMAP_PENDING] = v
        hneed[H_REMAP_PENDING] = 1.0
    v = _get(C, pidx[M_REMAP_FAILURE], t, j)
    if math.isfinite(v):
        any_val = True
        hits[H_REMAP_FAILURE] = 1.0 if v > 0.0 else 0.0
        hvals[H_REMAP_FAILURE] = v
        hneed[H_REMAP_FAILURE] = 1.0
        hrec[H_REMAP_FAILURE] = 0.0
    v = _get(C, pidx[M_XID], t, j)
    if math.isfinite(v):
        any_val = True
        xid = np.int64(v)
        prev = SD[i, SD_P_XID]
        SD[i, SD_P_XID] = v
        # xid_last holds the last XID seen: a change (or a first non-zero value) is an event
        new = xid != 0 and (math.isnan(prev) or np.int64(prev) != xid)
        if new and _is_fatal_xid(xid) and SD[i, SD_FAILED] == 0.0:
            SD[i, SD_FAILED] = v
            SD[i, SD_FAILSTEP] = st
            SD[i, SD_FAILTIME] = ts
        hits[H_XID] = 1.0 if (new and _is_degrading_xid(xid)) else 0.0
        hvals[H_XID] = v
        hneed[H_XID] = 1.0
        hrec[H_XID] = P[P_XIDHOLD]
    v = _get(C, pidx[M_DEVICE_LOST], t, j)
    if math.isfinite(v):
        any_val = True
        if v > 0.0 and SD[i, SD_FAILED] == 0.0:
            SD[i, SD_FAILED] = -2.0
            SD[i, SD_FAILSTEP] = st
            SD[i, SD_FAILTIME] = ts
    if math.isfinite(_get(C, pidx[M_SM_CLOCK], t, j)):
        any_val = True
    for k in range(H_KINDS):
        if not math.isnan(hits[k]):
            _level(SH, i, k, hits[k] > 0.0, hneed[k], hrec[k], st, ts, hvals[k])
    return any_val


@njit(_nrt=False)
def _is_fatal_xid(x):
    # 48 double-bit ECC, 79 fell off the bus, 95 uncontained ECC,
    # 119/120 GSP RPC timeout/error, 140 unrecovered ECC: the GPU needs a reset
    return x == 48 or x == 79 or x == 95 or x == 119 or x == 120 or x == 140


@njit(_nrt=False)
def _is_degrading_xid(x):
    # 61/62 micro-controller halt, 63/64 row-remap event/failure, 74 NVLink,
    # 92 high single-bit ECC rate, 94 contained ECC
    return x == 61 or x == 62 or x == 63 or x == 64 or x == 74 or x == 92 or x == 94


@njit(_nrt=False)
def _loo_index(sv, c, v):
    """A position ``i`` with ``_loo_median(sv, c, i) == _loo_median(sv, c, lower_bound(v))``.

    :func:`degrade.core._kernels_peer._loo_deviation` is ``v -
    _loo_median(sv, c, i)`` with ``i`` the first position of the sorted
    ``sv[:c]`` not below ``v``, found by binary search (~40 ns a sample,
    branches the CPU cannot predict: a third of the engine's time).
    ``_loo_median`` only asks whether ``i`` lies past its two middle
    positions ``h = (c - 1) // 2`` and ``g = h - 1``, and ``i > h`` holds
    exactly when ``sv[h] < v`` (likewise for ``g``): two comparisons give a
    position on the same side of both, hence the same median, bit for bit.
    """
    h = (c - 1) // 2
    if sv[h] < v:
        return h + 1
    g = h - 1
    if g < 0 or sv[g] < v:
        return h
    return g


@njit(_nrt=False)
def _insertion_sort(a, lo, hi):
    for r in range(lo + 1, hi):
        v = a[r]
        q = r - 1
        while q >= lo and a[q] > v:
            a[q + 1] = a[q]
            q -= 1
        a[q + 1] = v


@njit
def _sort_prefix(a, m, tmp, cnt):
    """Sort ``a[:m]`` in place, ascending: the same array as ``a[:m].sort()``, faster.

    The peers' log timings of one step fill their range about evenly, so a
    bucket sort (``m`` buckets between the minimum and the maximum, each
    finished by insertion, or by ``np.sort`` when crowded) takes a few passes
    instead of the ~log2(m) of a quicksort: the per-step sort was about a
    fifth of the engine's time. The bucket of ``v`` is monotone in ``v``, so
    buckets are ordered and the result is the sorted array whatever the
    values. ``tmp`` (>= m) and ``cnt`` (>= m + 1) are scratch. Non-finite
    values take ``np.sort`` (NaN last).
    """
    if m < 24:
        _insertion_sort(a, 0, m)
        return
    mn = a[0]
    mx = a[0]
    for r in range(m):
        v = a[r]
        if not math.isfinite(v):
            a[:m].sort()
            return
        if v < mn:
            mn = v
        elif v > mx:
            mx = v
    if mx == mn:
        return
    scale = (m - 1) / (mx - mn)
    if not math.isfinite(scale):
        a[:m].sort()
        return
    for k in range(m + 1):
        cnt[k] = 0
    for r in range(m):
        cnt[int((a[r] - mn) * scale) + 1] += 1
    for k in range(m):
        cnt[k + 1] += cnt[k]
    for r in range(m):
        b = int((a[r] - mn) * scale)
        tmp[cnt[b]] = a[r]
        cnt[b] += 1
    # bucket k now spans tmp[cnt[k - 1]:cnt[k]] (from 0 for k = 0)
    lo = 0
    for k in range(m):
        hi = cnt[k]
        if hi - lo > 16:
            tmp[lo:hi].sort()
        elif hi - lo > 1:
            _insertion_sort(tmp, lo, hi)
        lo = hi
    for r in range(m):
        a[r] = tmp[r]


@njit
def _drop_implausible(vals, pos, m, sv, dev, SD, SS, P, stmp, scnt):
    """Remove data errors from the group's log timings ``vals[:m]``; return how many remain.

    For ``m >= 2`` it leaves ``sv[:m]`` holding the sorted values; when
    nothing was dropped the caller uses them as they are.

    A timing is implausible when it lies more than ``P_OUTLIER`` (log units)
    from the group's median *and* from the device's own last plausible
    timing (or, with no peers, its own warmed-up baseline): 1e300 or 1e-6
    s where peers take 0.1 s. Such samples are counted (``SD_NOUT``) and
    skipped like NaN, so they change neither the device's verdict nor its
    peers' reference. A device whose whole range moved with its peers' is
    kept, as is a lone device until its own baseline is known.
    """
    lim = P[P_OUTLIER]
    if m == 0:
        return 0
    if m >= 2:
        for r in range(m):
            sv[r] = vals[r]
        _sort_prefix(sv, m, stmp, scnt)
        med = _sorted_median(sv, m)
        if med - sv[0] <= lim and sv[m - 1] - med <= lim:
            return m
    else:
        med = NAN
    k = 0
    for r in range(m):
        v = vals[r]
        i = dev[pos[r]]
        far = (not math.isnan(med)) and abs(v - med) > lim
        if m == 1:
            ref = SS[i, C_LOC] if SS[i, C_N] >= P[P_WARM] else NAN
            far = math.isfinite(ref) and abs(v - ref) > lim
        elif far:
            own = SD[i, SD_LASTV]
            far = not (math.isfinite(own) and abs(v - own) <= lim)
        if far:
            SD[i, SD_NOUT] += 1.0
            continue
        vals[k] = v
        pos[k] = pos[r]
        k += 1
    return k


@njit(_nrt=False)
def _job_update(SJ, g, x, ndev, step, ts, P, ev, n_ev):
    """Job-wide slow steps: the group median against its own robust baseline."""
    n = SJ[g, J_N]
    SJ[g, J_LASTX] = x
    if n < P[P_WARM]:
        _job_learn(SJ, g, x, P)
        return n_ev
    e = x - SJ[g, J_LOC]
    sig = max(SJ[g, J_SCALE], P[P_MINSCALE])
    thr = max(P[P_MU1], P[P_JOBZ] * sig)
    if SJ[g, J_OPEN] != 0.0:
        thr *= 0.5  # hysteresis: an open event ends only when the job is clearly back
    slow = e > thr
    fast = -e > P[P_MU1] and -e > P[P_JOBZ] * sig
    if slow:
        SJ[g, J_FAST] = 0.0
        if SJ[g, J_OPEN] == 0.0:
            SJ[g, J_OPEN] = 1.0
            SJ[g, J_SSTEP] = step
            SJ[g, J_STIME] = ts
            SJ[g, J_PEAK] = e
            SJ[g, J_SUM] = 0.0
            SJ[g, J_CNT] = 0.0
            SJ[g, J_NDEV] = ndev
        SJ[g, J_LSTEP] = step
        SJ[g, J_LTIME] = ts
        SJ[g, J_SUM] += e
        SJ[g, J_CNT] += 1.0
        SJ[g, J_GAP] = 0.0
        if e > SJ[g, J_PEAK]:
            SJ[g, J_PEAK] = e
        if ndev > SJ[g, J_NDEV]:
            SJ[g, J_NDEV] = ndev
        if SJ[g, J_CNT] >= P[P_JOBSUST]:
            # a lasting level change (schedule change or job-wide slowdown):
            # report it and make the new level the baseline
            n_ev = _job_close(SJ, g, 1.0, ev, n_ev)
            SJ[g, J_LOC] = x
        return n_ev
    if SJ[g, J_OPEN] != 0.0:
        SJ[g, J_GAP] += 1.0
        if SJ[g, J_GAP] > P[P_JOBGAP]:
            n_ev = _job_close(SJ, g, 0.0, ev, n_ev)
    if fast:
        SJ[g, J_FAST] += 1.0
        if SJ[g, J_FAST] >= P[P_JOBSUST]:
            SJ[g, J_LOC] = x
            SJ[g, J_FAST] = 0.0
        return n_ev
    SJ[g, J_FAST] = 0.0
    if SJ[g, J_OPEN] == 0.0:
        _job_learn(SJ, g, x, P)
    return n_ev


@njit(_nrt=False)
def _job_learn(SJ, g, x, P):
    n = SJ[g, J_N]
    if n == 0:
        SJ[g, J_LOC] = x
        SJ[g, J_SCALE] = NAN
    else:
        r = x - SJ[g, J_LOC]
        s = SJ[g, J_SCALE]
        if math.isnan(s):
            SJ[g, J_SCALE] = abs(r) * 0.886227
            SJ[g, J_LOC] += 0.5 * r
        else:
            lam = 1.0 / (n + 1.0)
            if lam < P[P_LAMMIN]:
                lam = P[P_LAMMIN]
            c = P[P_CLIP] * max(s, 0.1 * P[P_MINSCALE])
            rc = min(max(r, -c), c)
            SJ[g, J_LOC] += lam * rc
            SJ[g, J_SCALE] += lam * (abs(rc) * 1.253314 - s)
    SJ[g, J_N] = n + 1.0


@njit(_nrt=False)
def _job_close(SJ, g, kind, ev, n_ev):
    k = n_ev
    ev[k, EV_GROUP] = g
    ev[k, EV_KIND] = kind
    ev[k, EV_SSTEP] = SJ[g, J_SSTEP]
    ev[k, EV_ESTEP] = SJ[g, J_LSTEP]
    ev[k, EV_STIME] = SJ[g, J_STIME]
    ev[k, EV_ETIME] = SJ[g, J_LTIME]
    ev[k, EV_MEAN] = SJ[g, J_SUM] / max(SJ[g, J_CNT], 1.0)
    ev[k, EV_PEAK] = SJ[g, J_PEAK]
    ev[k, EV_NDEV] = SJ[g, J_NDEV]
    SJ[g, J_OPEN] = 0.0
    SJ[g, J_GAP] = 0.0
    SJ[g, J_CNT] = 0.0
    SJ[g, J_SUM] = 0.0
    return n_ev + 1


@njit
def _engine_block(
    t_start,
    seq0,
    XT,
    XJ,
    C,
    cmap,
    steps,
    times,
    dev,
    tg_ptr,
    tg_mem,
    tg_state,
    cg_ptr,
    cg_mem,
    P,
    dz_grid,
    hz_grid,
    ST,
    SS,
    SC,
    SB,
    HT,
    HS,
    HC,
    SH,
    SD,
    SJ,
    ev,
):
    """Process rows ``t_start..T-1``; return (next row, events written).

    Stops early when the job-event buffer ``ev`` could overflow; the caller
    drains it and calls again from the returned row.
    """
    T = steps.shape[0]
    N = dev.shape[0]
    has_t = XT.shape[1] > 0
    has_j = XJ.shape[1] > 0
    has_c = C.shape[0] > 0
    step_cols = steps.shape[1]
    time_cols = times.shape[1]
    n_tg = tg_ptr.shape[0] - 1
    n_cg = cg_ptr.shape[0] - 1
    vals = np.empty(max(N, 1))
    pos = np.empty(max(N, 1), dtype=np.int64)
    sv = np.empty(max(N, 1))
    dbuf = np.empty(max(N, 1))
    ubuf = np.empty(max(N, 1), dtype=np.bool_)
    jv = np.empty(max(N, 1))
    jp = np.empty(max(N, 1), dtype=np.int64)
    stmp = np.empty(max(N, 1))
    scnt = np.empty(max(N, 1) + 1, dtype=np.int64)
    ev_cap = ev.shape[0]
    # counters and flags passed to other kernels are typed variables, not
    # literals: numba would otherwise compile a callee once for Literal[int](0)
    # (the loop's first typing pass) and again for int64, and the channel
    # once per literal bool
    zero = np.int64(0)
    peer = np.bool_(False)
    own = np.bool_(True)
    n_ev = zero
    pidx = cmap
    p_sm_clock = cmap[M_SM_CLOCK]
    p_sm_clock_max = cmap[M_SM_CLOCK_MAX]
    p_util = cmap[M_UTIL]
    p_reasons = cmap[M_REASONS]
    hits = np.empty(H_KINDS)
    hvals = np.empty(H_KINDS)
    hneed = np.empty(H_KINDS)
    hrec = np.empty(H_KINDS)
    for t in range(t_start, T):
        if n_ev + n_tg + 1 > ev_cap:
            return t, n_ev
        seq = seq0 + t
        # ---- timings: spatial (peers) or temporal (no peers) -------------
        if has_t:
            for g in range(n_tg):
                a = tg_ptr[g]
                b = tg_ptr[g + 1]
                m = zero
                for q in range(a, b):
                    j = tg_mem[q]
                    v = XT[t, j]
                    i = dev[j]
                    st = steps[t, j if step_cols > 1 else 0]
                    ts = times[t, j if time_cols > 1 else 0]
                    if math.isfinite(v) and v > 0.0:
                        vals[m] = math.log(v)
                        pos[m] = j
                        m += 1
                        SD[i, SD_LASTSTEP] = st
                        SD[i, SD_LASTTIME] = ts
                        SD[i, SD_LASTSEQ] = seq
                        if math.isnan(SD[i, SD_FIRSTSTEP]):
                            SD[i, SD_FIRSTSTEP] = st
                    else:
                        SD[i, SD_NMISS] += 1.0
                m0 = m
                m = _drop_implausible(vals, pos, m, sv, dev, SD, SS, P, stmp, scnt)
                for r in range(m):
                    i = dev[pos[r]]
                    SD[i, SD_NT] += 1.0
                    SD[i, SD_TSTEP] = steps[t, pos[r] if step_cols > 1 else 0]
                    SD[i, SD_LASTV] = vals[r]
                if m >= 2:
                    if m != m0:
                        # data errors were dropped: sort what remains
                        for r in range(m):
                            sv[r] = vals[r]
                        _sort_prefix(sv, m, stmp, scnt)
                    n_up = 0
                    for r in range(m):
                        i = dev[pos[r]]
                        v = vals[r]
                        d = v - _loo_median(sv, m, _loo_index(sv, m, v))
                        dbuf[r] = d
                        ubuf[r] = _stall_exceeds(SB, ST, i, d, P)
                        if ubuf[r]:
                            n_up += 1
                    for r in range(m):
                        j = pos[r]
                        i = dev[j]
                        st = steps[t, j if step_cols > 1 else 0]
                        ts = times[t, j if time_cols > 1 else 0]
                        SD[i, SD_NPEERS] = m - 1
                        d = dbuf[r]
                        u = ubuf[r]
                        _channel_update(ST, HT, i, d, peer, st, ts, P, dz_grid, hz_grid)
                        _stall_update(SB, i, d, u, (n_up - (1 if u else 0)) / (m - 1.0), st, ts, P)
                elif m == 1:
                    j = pos[0]
                    i = dev[j]
                    st = steps[t, j if step_cols > 1 else 0]
                    ts = times[t, j if time_cols > 1 else 0]
                    SD[i, SD_NPEERS] = 0.0
                    _channel_update(SS, HS, i, vals[0], own, st, ts, P, dz_grid, hz_grid)
                # job-wide evidence: the group's median time against its own past
                mj = zero
                if has_j:
                    for q in range(a, b):
                        j = tg_mem[q]
                        v = XJ[t, j]
                        if math.isfinite(v) and v > 0.0:
                            jv[mj] = math.log(v)
                            jp[mj] = j
                            mj += 1
                    if mj > 0:
                        j0 = jp[0]
                        _sort_prefix(jv, mj, stmp, scnt)
                        xm = _sorted_median(jv, mj)
                        st = steps[t, j0 if step_cols > 1 else 0]
                        ts = times[t, j0 if time_cols > 1 else 0]
                        n_ev = _job_update(SJ, tg_state[g], xm, mj, st, ts, P, ev, n_ev)
                elif m > 0:
                    xm = _sorted_median(sv, m) if m >= 2 else vals[0]
                    j0 = pos[0]
                    st = steps[t, j0 if step_cols > 1 else 0]
                    ts = times[t, j0 if time_cols > 1 else 0]
                    n_ev = _job_update(SJ, tg_state[g], xm, m, st, ts, P, ev, n_ev)
        if not has_c:
            continue
        # ---- counters: hard signals per device ---------------------------
        for j in range(N):
            i = dev[j]
            st = steps[t, j if step_cols > 1 else 0]
            ts = times[t, j if time_cols > 1 else 0]
            if _hard_sample(C, t, j, i, pidx, st, ts, SH, SD, P, hits, hvals, hneed, hrec):
                SD[i, SD_NC] += 1.0
                SD[i, SD_LASTSEQ] = seq
                if math.isfinite(ts):
                    SD[i, SD_LASTTIME] = ts
                if math.isfinite(st):
                    SD[i, SD_LASTSTEP] = st
        # ---- counters: clock ratio against busy peers --------------------
        if p_sm_clock < 0:
            continue
        for g in range(n_cg):
            a = cg_ptr[g]
            b = cg_ptr[g + 1]
            m = zero
            for q in range(a, b):
                j = cg_mem[q]
                clk = _get(C, p_sm_clock, t, j)
                if not (math.isfinite(clk) and clk > 0.0):
                    continue
                util = _get(C, p_util, t, j)
                if math.isfinite(util) and util < P[P_BUSY]:
                    continue
                rs = _get(C, p_reasons, t, j)
                if math.isfinite(rs) and rs >= 0.0 and (np.int64(rs) & B_IDLE) != 0:
                    continue
                cm = _get(C, p_sm_clock_max, t, j)
                ratio = clk / cm if (math.isfinite(cm) and cm > 0.0) else clk
                vals[m] = math.log(ratio)
                pos[m] = j
                m += 1
            if m < 2:
                continue
            for r in range(m):
                sv[r] = vals[r]
            _sort_prefix(sv, m, stmp, scnt)
            for r in range(m):
                j = pos[r]
                i = dev[j]
                st = steps[t, j if step_cols > 1 else 0]
                ts = times[t, j if time_cols > 1 else 0]
                # a lower clock than peers counts as a slowdown
                v = vals[r]
                d = -(v - _loo_median(sv, m, _loo_index(sv, m, v)))
                _channel_update(SC, HC, i, d, peer, st, ts, P, dz_grid, hz_grid)
    return T, n_ev
