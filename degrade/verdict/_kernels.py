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

from ._layout import *  # noqa: F403


@njit
def _interp_h(dz, dz_grid, hz_grid):
    """Decision interval for a standardised shift ``dz`` (grid is log-spaced)."""
    n = dz_grid.shape[0]
    if dz <= dz_grid[0]:
        return hz_grid[0]
    if dz >= dz_grid[n - 1]:
        return hz_grid[n - 1]
    lo = math.log(dz_grid[0])
    step = (math.log(dz_grid[n - 1]) - lo) / (n - 1)
    pos = (math.log(dz) - lo) / step
    j = int(pos)
    if j >= n - 1:
        j = n - 2
    w = pos - j
    return hz_grid[j] * (1.0 - w) + hz_grid[j + 1] * w


@njit
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


@njit
def _channel_update(S, i, x, own, step, ts, P, dz_grid, hz_grid):
    """Feed one finite sample ``x`` (log units, larger = slower) to channel row ``i``.

    ``own`` channels compare ``x`` with their own robust baseline (temporal
    evidence); the others receive a deviation from peers (spatial evidence)
    whose healthy level may sit anywhere up to ``mu0``.
    """
    n = S[i, C_N]
    mu1 = P[P_MU1]
    if own:
        mu0 = 0.0
        dv = x - S[i, C_LOC] if n > 0 else 0.0
    else:
        mu0 = P[P_MU0]
        dv = x
    s_prev = S[i, C_S]
    warm = n >= P[P_WARM]
    if warm:
        phi = S[i, C_AC]
        if phi < 0.0:
            phi = 0.0
        elif phi > 0.9:
            phi = 0.9
        if s_prev == 0.0:
            # sigma and h are frozen during an excursion; between excursions h
            # is re-designed only when sigma moved by more than 1 % (it costs a log)
            sig_new = max(S[i, C_SCALE], P[P_MINSCALE]) * math.sqrt((1.0 + phi) / (1.0 - phi))
            sig_old = S[i, C_SIG]
            if not (abs(sig_new - sig_old) <= 0.01 * sig_old):
                S[i, C_SIG] = sig_new
                S[i, C_H] = _interp_h((mu1 - mu0) / sig_new, dz_grid, hz_grid)
        sig = S[i, C_SIG]
        h = S[i, C_H]
        z = (dv - 0.5 * (mu0 + mu1)) / sig
        c = P[P_CLIP]
        if z > c:
            z = c
        elif z < -c:
            z = -c
        s_new = s_prev + z
        if s_new < 0.0:
            s_new = 0.0
        if s_new > P[P_CAP] * h:
            s_new = P[P_CAP] * h
        if s_prev == 0.0 and s_new > 0.0:
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
        # large-shift rule: the median of the last RING deviations, whose
        # standard error is ~1.25 sigma_lr / sqrt(RING) (median efficiency,
        # long-run sigma for the autocorrelation); the median ignores single
        # heavy-tailed spikes and their short AR echoes, a plateau of large
        # deviations (a straggler for ten steps) crosses it
        k = int(S[i, C_RN]) % RING
        S[i, C_RING + k] = dv
        S[i, C_RING + RING + k] = step
        S[i, C_RING + 2 * RING + k] = ts
        S[i, C_RN] = S[i, C_RN] + 1.0
        wm = NAN
        big = False
        big_h = P[P_BIGZ] * 1.2533 * sig / math.sqrt(RING)
        if S[i, C_RN] >= RING and (mu1 - mu0) < big_h:
            # the median can pass big_h only if its upper half does (NaN sorts
            # last, so it counts as above): a count of RING values spares the
            # sort at almost every step
            above = 0
            for q in range(RING):
                if not (S[i, C_RING + q] - mu0 <= big_h):
                    above += 1
            if above >= RING // 2:
                wm = _ring_median(S, i)
                big = (not math.isnan(wm)) and wm - mu0 > big_h
        if S[i, C_ALARM] == 0.0:
            if big and S[i, C_HIT] < P[P_PERSIST]:
                S[i, C_ALARM] = 1.0
                # onset: the first sample of the window above the threshold;
                # the slowdown: the mean from there
                S[i, C_ASUM] = 0.0
                S[i, C_AN] = 0.0
                for q in range(RING):
                    o = (int(S[i, C_RN]) - RING + q) % RING
                    if S[i, C_AN] == 0.0 and S[i, C_RING + o] - mu0 <= big_h:
                        continue
                    if S[i, C_AN] == 0.0:
                        S[i, C_ONSTEP] = S[i, C_RING + RING + o]
                        S[i, C_ONTIME] = S[i, C_RING + 2 * RING + o]
                    S[i, C_ASUM] += S[i, C_RING + o]
                    S[i, C_AN] += 1.0
                S[i, C_XS] = (wm - mu0) / sig
                S[i, C_XH] = big_h / sig
                S[i, C_XBIG] = 1.0
                S[i, C_DETSTEP] = step
                S[i, C_DETTIME] = ts
                S[i, C_CLEAR] = 0.0
                S[i, C_PEAK] = max(s_new / h, (wm - mu0) / big_h)
                S[i, C_ENDSTEP] = NAN
                S[i, C_ENDTIME] = NAN
                S[i, C_EPISODES] += 1.0
            elif S[i, C_HIT] >= P[P_PERSIST]:
                S[i, C_ALARM] = 1.0
                S[i, C_XBIG] = 0.0
                S[i, C_ONSTEP] = S[i, C_CSTEP]
                S[i, C_ONTIME] = S[i, C_CTIME]
                S[i, C_ASUM] = S[i, C_SSUM]
                S[i, C_AN] = S[i, C_SN]
                # the statistic and h at the crossing: h is re-designed between
                # excursions, so the reason must not pair a later h with it
                S[i, C_XS] = s_new
                S[i, C_XH] = h
                S[i, C_DETSTEP] = step
                S[i, C_DETTIME] = ts
                S[i, C_CLEAR] = 0.0
                S[i, C_PEAK] = s_new / h
                S[i, C_ENDSTEP] = NAN
                S[i, C_ENDTIME] = NAN
                S[i, C_EPISODES] += 1.0
        elif S[i, C_XBIG] != 0.0 and S[i, C_HIT] >= P[P_PERSIST]:
            # the CUSUM confirms an alarm the window-median rule raised: from
            # here on the episode is the CUSUM's (its onset, mean and crossing)
            S[i, C_XBIG] = 0.0
            S[i, C_ONSTEP] = S[i, C_CSTEP]
            S[i, C_ONTIME] = S[i, C_CTIME]
            S[i, C_ASUM] = S[i, C_SSUM]
            S[i, C_AN] = S[i, C_SN]
            S[i, C_XS] = s_new
            S[i, C_XH] = h
            S[i, C_CLEAR] = 0.0
            if s_new / h > S[i, C_PEAK]:
                S[i, C_PEAK] = s_new / h
        else:
            S[i, C_ASUM] += dv
            S[i, C_AN] += 1.0
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
    else:
        s_new = 0.0
    # location/scale learn only while the statistic is low, so a fault cannot
    # teach the detector that it is normal; excluding every sample with S > 0
    # would bias the autocorrelation down (positive runs are what lift S)
    if n == 0:
        S[i, C_FSTEP] = step
        S[i, C_FTIME] = ts
    if S[i, C_ALARM] == 0.0 and (not warm or s_new < 0.5 * S[i, C_H]):
        if n == 0:
            S[i, C_LOC] = x
            S[i, C_SCALE] = NAN
            S[i, C_PREV] = NAN
            S[i, C_AC] = 0.0
        else:
            r = x - S[i, C_LOC]
            s = S[i, C_SCALE]
            if math.isnan(s):
                # two samples: |x1 - x0| has mean 2 sigma / sqrt(pi)
                S[i, C_SCALE] = abs(r) * 0.886227
                S[i, C_SQ] = 0.5 * r * r
                S[i, C_LOC] += 0.5 * r
            else:
                lam = 1.0 / (n + 1.0)
                if lam < P[P_LAMMIN]:
                    lam = P[P_LAMMIN]
                s_floor = max(s, 0.1 * P[P_MINSCALE])
                c = P[P_CLIP] * s_floor
                rc = r
                if rc > c:
                    rc = c
                elif rc < -c:
                    rc = -c
                S[i, C_LOC] += lam * rc
                # E|N(0, sigma)| = sigma * sqrt(2 / pi)
                S[i, C_SCALE] += lam * (abs(rc) * 1.253314 - s)
                S[i, C_SQ] += lam * (rc * rc - S[i, C_SQ])
                pv = S[i, C_PREV]
                if not math.isnan(pv):
                    S[i, C_XP] += lam * (pv * rc - S[i, C_XP])
                    if S[i, C_SQ] > 0.0:
                        S[i, C_AC] = S[i, C_XP] / S[i, C_SQ]
                S[i, C_PREV] = rc
    S[i, C_N] = n + 1.0
    S[i, C_LASTX] = dv
    S[i, C_LASTSTEP] = step


@njit
def _stall_update(S, i, d, step, ts, P):
    """Bernoulli CUSUM on "this step took far longer than the peers' median".

    Intermittent stalls are clipped away by the winsorised level CUSUM; this
    channel counts them instead. Increments are the log-likelihood ratio of
    a stall rate p1 (stalls that add ``min_slowdown`` on average) against a
    healthy rate p0, so by Lorden's bound ``h = log(arl0)`` keeps the
    in-control ARL above ``arl0``.
    """
    n = S[i, C_N]
    u = d > P[P_STALL]
    s_prev = S[i, C_S]
    h = P[P_STALL_H]
    s_new = s_prev + (P[P_STALL_UP] if u else P[P_STALL_DOWN])
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
        if s_new > 0.0:
            S[i, C_SSUM] += d
            S[i, C_SN] += 1.0
        S[i, C_S] = s_new
        S[i, C_H] = h
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
        else:
            S[i, C_ASUM] += d
            S[i, C_AN] += 1.0
            if s_new / h > S[i, C_PEAK]:
                S[i, C_PEAK] = s_new / h
            if s_new == 0.0:
                S[i, C_ALARM] = 0.0
                S[i, C_ENDSTEP] = step
                S[i, C_ENDTIME] = ts
        if u:
            S[i, C_HIT] += 1.0  # stalls counted since the start
    S[i, C_N] = n + 1.0
    S[i, C_LASTX] = d
    S[i, C_LASTSTEP] = step


@njit
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


@njit
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


@njit
def _is_fatal_xid(x):
    # 48 double-bit ECC, 79 fell off the bus, 95 uncontained ECC,
    # 119/120 GSP RPC timeout/error, 140 unrecovered ECC: the GPU needs a reset
    return x == 48 or x == 79 or x == 95 or x == 119 or x == 120 or x == 140


@njit
def _is_degrading_xid(x):
    # 61/62 micro-controller halt, 63/64 row-remap event/failure, 74 NVLink,
    # 92 high single-bit ECC rate, 94 contained ECC
    return x == 61 or x == 62 or x == 63 or x == 64 or x == 74 or x == 92 or x == 94


@njit
def _sort_small(vals, pos, m):
    """Insertion sort of vals[:m] carrying pos (groups are small, usually <= 16)."""
    for a in range(1, m):
        v = vals[a]
        p = pos[a]
        b = a - 1
        while b >= 0 and vals[b] > v:
            vals[b + 1] = vals[b]
            pos[b + 1] = pos[b]
            b -= 1
        vals[b + 1] = v
        pos[b + 1] = p


@njit
def _sort_group(vals, pos, m):
    if m <= 32:
        _sort_small(vals, pos, m)
    else:
        order = np.argsort(vals[:m], kind="mergesort")
        tv = vals[:m].copy()
        tp = pos[:m].copy()
        for a in range(m):
            vals[a] = tv[order[a]]
            pos[a] = tp[order[a]]


@njit
def _loo_median(vals, m, r):
    """Median of sorted vals[:m] without the element of rank r."""
    n = m - 1
    if n % 2 == 1:
        mid = n // 2
        return vals[mid] if mid < r else vals[mid + 1]
    a = n // 2 - 1
    b = n // 2
    va = vals[a] if a < r else vals[a + 1]
    vb = vals[b] if b < r else vals[b + 1]
    return 0.5 * (va + vb)


@njit
def _median_sorted(vals, m):
    if m % 2 == 1:
        return vals[m // 2]
    return 0.5 * (vals[m // 2 - 1] + vals[m // 2])


@njit
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


@njit
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


@njit
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
    jv = np.empty(max(N, 1))
    jp = np.empty(max(N, 1), dtype=np.int64)
    ev_cap = ev.shape[0]
    n_ev = 0
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
                m = 0
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
                        SD[i, SD_NT] += 1.0
                        SD[i, SD_TSTEP] = st
                        SD[i, SD_LASTSTEP] = st
                        SD[i, SD_LASTTIME] = ts
                        SD[i, SD_LASTSEQ] = seq
                        if math.isnan(SD[i, SD_FIRSTSTEP]):
                            SD[i, SD_FIRSTSTEP] = st
                    else:
                        SD[i, SD_NMISS] += 1.0
                if m >= 2:
                    _sort_group(vals, pos, m)
                    for r in range(m):
                        j = pos[r]
                        i = dev[j]
                        st = steps[t, j if step_cols > 1 else 0]
                        ts = times[t, j if time_cols > 1 else 0]
                        SD[i, SD_NPEERS] = m - 1
                        d = vals[r] - _loo_median(vals, m, r)
                        _channel_update(ST, i, d, False, st, ts, P, dz_grid, hz_grid)
                        _stall_update(SB, i, d, st, ts, P)
                elif m == 1:
                    j = pos[0]
                    i = dev[j]
                    st = steps[t, j if step_cols > 1 else 0]
                    ts = times[t, j if time_cols > 1 else 0]
                    SD[i, SD_NPEERS] = 0.0
                    _channel_update(SS, i, vals[0], True, st, ts, P, dz_grid, hz_grid)
                # job-wide evidence: the group's median time against its own past
                mj = 0
                if has_j:
                    for q in range(a, b):
                        j = tg_mem[q]
                        v = XJ[t, j]
                        if math.isfinite(v) and v > 0.0:
                            jv[mj] = math.log(v)
                            jp[mj] = j
                            mj += 1
                    if mj > 0:
                        _sort_group(jv, jp, mj)
                        xm = _median_sorted(jv, mj)
                        j0 = jp[0]
                        st = steps[t, j0 if step_cols > 1 else 0]
                        ts = times[t, j0 if time_cols > 1 else 0]
                        n_ev = _job_update(SJ, tg_state[g], xm, mj, st, ts, P, ev, n_ev)
                elif m > 0:
                    xm = _median_sorted(vals, m) if m >= 2 else vals[0]
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
            m = 0
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
            _sort_group(vals, pos, m)
            for r in range(m):
                j = pos[r]
                i = dev[j]
                st = steps[t, j if step_cols > 1 else 0]
                ts = times[t, j if time_cols > 1 else 0]
                # a lower clock than peers counts as a slowdown
                d = _loo_median(vals, m, r) - vals[r]
                _channel_update(SC, i, d, False, st, ts, P, dz_grid, hz_grid)
    return T, n_ev
