"""State layouts and parameter indices shared by the engine kernel and its Python side.

Kept apart from ``_kernels`` so that importing the engine does not import numba.
"""

from __future__ import annotations

import numpy as np

# --- channel state (one CUSUM evidence stream per device) -----------------
C_N = 0  # samples seen by this channel
C_LOC = 1  # robust running location (centre for the scale; baseline for own-history channels)
C_SCALE = 2  # timing/clock channels: Huber variance of the AR(1) innovation
C_PREV = 3  # previous winsorised residual (lag-1 autocorrelation)
C_AC = 4  # lag-1 autocorrelation of the winsorised residual (C_XP / C_SQ)
C_S = 5  # one-sided CUSUM statistic, in sigma units
C_SN = 6  # samples since the statistic left zero
C_SSUM = 7  # sum of the deviation since the statistic left zero
C_CSTEP = 8  # step at which the statistic left zero (onset candidate)
C_CTIME = 9
C_HIT = 10  # consecutive samples above h
C_ALARM = 11  # 1 while the channel is in alarm (with hysteresis)
C_ONSTEP = 12  # onset of the current/last alarm episode
C_ONTIME = 13
C_DETSTEP = 14  # detection of the current/last alarm episode
C_DETTIME = 15
C_ASUM = 16  # sum / count of the deviation since onset (slowdown estimate)
C_AN = 17
C_CLEAR = 18  # consecutive samples below h/2 while in alarm
C_PEAK = 19  # peak S/h of the current/last episode
C_H = 20  # decision interval in use (sigma units)
C_SIG = 21  # long-run sigma in use (log units)
C_ENDSTEP = 22  # when the last episode cleared (NaN while active or never)
C_ENDTIME = 23
C_EPISODES = 24
C_LASTX = 25  # last deviation fed in
C_LASTSTEP = 26
C_SQ = 27  # running mean square of the winsorised residual
C_XP = 28  # running mean lag-1 product of the winsorised residual
C_FSTEP = 29  # first sample of the channel (onset of faults present from the start)
C_FTIME = 30
C_XS = 31  # the CUSUM statistic that raised the current/last alarm, at the crossing
C_XH = 32  # the h it crossed
# large-shift rule: median of the last RING deviations against its own
# (autocorrelation-aware) standard error; a ring of deviations and their steps
C_XBIG = 33  # 1 when the window-median rule raised it
C_RN = 34  # deviations put in the ring so far
C_RING = 35  # RING deviations, then RING steps, then RING times
RING = 8
C_FIELDS_V2 = C_RING + 3 * RING  # rows saved before prewhitening and the latched episode
C_SIGE = C_FIELDS_V2  # innovation sigma in use (AR(1)-prewhitened scores are divided by it)
C_PHIU = C_FIELDS_V2 + 1  # AR(1) coefficient in use for prewhitening
C_HN = C_FIELDS_V2 + 2  # deviations put in the onset history so far
# the first episode that qualified as degraded, kept for the batch latch
# (a later, smaller episode must not overwrite it)
C_L_ONSTEP = C_FIELDS_V2 + 3
C_L_ONTIME = C_FIELDS_V2 + 4
C_L_DETSTEP = C_FIELDS_V2 + 5
C_L_DETTIME = C_FIELDS_V2 + 6
C_L_ASUM = C_FIELDS_V2 + 7
C_L_AN = C_FIELDS_V2 + 8
C_L_ENDSTEP = C_FIELDS_V2 + 9
C_L_ENDTIME = C_FIELDS_V2 + 10
C_L_PEAK = C_FIELDS_V2 + 11
C_L_XS = C_FIELDS_V2 + 12
C_L_XH = C_FIELDS_V2 + 13
C_L_XBIG = C_FIELDS_V2 + 14
C_L_SIG = C_FIELDS_V2 + 15
C_L_LOC = C_FIELDS_V2 + 16
C_LATCHED = C_FIELDS_V2 + 17  # 2: the C_L_* fields hold a degraded episode, 1: a suspect one, 0: none
C_EPDEG = C_FIELDS_V2 + 18  # 1 once the episode in progress qualified as degraded (no flapping back)
C_BEFORE = C_FIELDS_V2 + 19  # the deviation's level before the onset of the current/last episode
C_MU0 = C_FIELDS_V2 + 20  # healthy level of the deviation in use (frozen during an excursion)
C_LOC0 = C_FIELDS_V2 + 21  # the location when the statistic last left zero
C_BSE = C_FIELDS_V2 + 22  # standard error of C_BEFORE
C_L_BSE = C_FIELDS_V2 + 23
C_FIELDS = C_FIELDS_V2 + 24
C_B_LEVEL = C_SIGE  # stall channel (which has no sigma of its own): fast level of its deviations
C_B_NSLOW = C_LOC0  # stall channel: slow steps since the statistic left zero
C_B_XSLOW = C_BEFORE  # stall channel: their summed deviation
C_FIELDS_V1 = 31  # rows saved before the crossing fields existed

# --- onset history: the last HIST deviations of a channel (values, steps, times),
# searched for the change point when the CUSUM alarms (degrade.changepoint)
HIST = 256
HIST_FIELDS = 3 * HIST
HIST_MIN = 5  # fewest samples on either side of a refined onset

# --- hard signals ---------------------------------------------------------
H_HW_SLOWDOWN = 0
H_HW_THERMAL = 1
H_POWER_BRAKE = 2
H_SW_THERMAL = 3
H_SW_POWER = 4
H_PCIE_WIDTH = 5
H_PCIE_GEN = 6
H_PCIE_REPLAY = 7
H_NVLINK = 8
H_ECC_UNCORRECTED = 9
H_ECC_CORRECTED = 10
H_REMAP_PENDING = 11
H_REMAP_FAILURE = 12
H_ROWS_UNCORRECTABLE = 13
H_XID = 14
H_KINDS = 15

HF_HIT = 0  # consecutive samples with the signal present
HF_CLEAR = 1  # consecutive samples without it while active
HF_ACTIVE = 2
HF_ONSTEP = 3
HF_ONTIME = 4
HF_DETSTEP = 5
HF_DETTIME = 6
HF_RATE = 7  # running fraction of samples with a rise (counters)
HF_VAL = 8  # last value that triggered (link width, XID, counter increase)
HF_EVER = 9
HF_CSTEP = 10
HF_CTIME = 11
HF_TOTAL = 12  # total increase seen (counters)
HF_FIELDS = 13

# --- per-device bookkeeping ----------------------------------------------
SD_LASTSTEP = 0
SD_LASTTIME = 1
SD_LASTSEQ = 2  # engine row counter at the last sample with any data
SD_NT = 3  # valid timing samples
SD_NC = 4  # counter samples
SD_NMISS = 5  # missing / non-positive timing samples
SD_IDLE = 6  # 1 when the last counter sample says idle
SD_NPEERS = 7  # peers in the last timing sample
SD_P_REPLAY = 8
SD_P_NVLINK = 9
SD_P_ECCU = 10
SD_P_ECCC = 11
SD_P_ROWSU = 12
SD_P_XID = 13
SD_FAILED = 14  # 0 none; > 0 fatal XID; -1 marked lost; -2 device_lost counter
SD_FAILSTEP = 15
SD_FAILTIME = 16
SD_TSTEP = 17  # step of the last valid timing sample
SD_FIRSTSTEP = 18
SD_NOUT = 19  # implausible timing samples skipped (data errors)
SD_LASTV = 20  # last plausible log timing (the device's own range for the outlier rule)
SD_FIELDS = 21
SD_FIELDS_V1 = 19  # rows saved before the outlier fields existed

# --- job groups (timings: one per job x peer group) -----------------------
J_N = 0
J_LOC = 1
J_SCALE = 2
J_OPEN = 3
J_SSTEP = 4
J_STIME = 5
J_LSTEP = 6  # last slow step of the open event
J_LTIME = 7
J_PEAK = 8
J_SUM = 9
J_CNT = 10
J_GAP = 11
J_NDEV = 12
J_FAST = 13
J_LASTX = 14
J_FIELDS = 15

EV_GROUP = 0
EV_KIND = 1  # 0 transient job slowdown, 1 sustained (schedule change or job-wide slowdown)
EV_SSTEP = 2
EV_ESTEP = 3
EV_STIME = 4
EV_ETIME = 5
EV_MEAN = 6
EV_PEAK = 7
EV_NDEV = 8
EV_FIELDS = 9

# --- counter metrics (planes of the counter cube) --------------------------
M_SM_CLOCK = 0
M_SM_CLOCK_MAX = 1
M_UTIL = 2
M_REASONS = 3
M_PCIE_GEN = 4
M_PCIE_GEN_MAX = 5
M_PCIE_WIDTH = 6
M_PCIE_WIDTH_MAX = 7
M_PCIE_REPLAY = 8
M_ECC_CORRECTED = 9
M_ECC_UNCORRECTED = 10
M_ROWS_CORRECTABLE = 11
M_ROWS_UNCORRECTABLE = 12
M_REMAP_PENDING = 13
M_REMAP_FAILURE = 14
M_XID = 15
M_NVLINK_CRC = 16
M_NVLINK_REPLAY = 17
M_NVLINK_RECOVERY = 18
M_DEVICE_LOST = 19
M_METRICS = 20

# --- parameters vector -----------------------------------------------------
P_MU0 = 0  # log(1 + healthy_offset): largest healthy static offset to peers
P_MU1 = 1  # log(1 + min_slowdown)
P_CLIP = 2  # winsorisation of standardised increments
P_LAMMIN = 3  # slowest forgetting of location/scale
P_WARM = 4
P_PERSIST = 5
P_RECOVER = 6
P_MINSCALE = 7
P_CAP = 8  # statistic capped at CAP * h so recovery is prompt
P_JOBZ = 9  # per-step z threshold of job-level slow steps
P_JOBGAP = 10
P_JOBSUST = 11
P_BUSY = 12
P_IDLE = 13
P_CLAM = 14  # forgetting of counter rise rates
P_WEAKP = 15
P_XIDHOLD = 16  # samples a non-fatal XID stays active (<= 0: until restart)
P_CRECOVER = 17  # samples without a counter rise before it clears
P_STALL = 18  # log-ratio to peers above which a step counts as a stall
P_STALL_P0 = 19  # smallest healthy rate of intermittent slow steps (stall_rate)
P_STALL_P1 = 20  # rate of slow steps to detect (intermittent_rate)
P_STALL_H = 21  # log(arl0): Lorden's bound makes the in-control ARL at least arl0
P_BIGZ = 22  # z threshold of the window-median rule (from arl0)
P_WINK = 23  # E[min(Z^2, c^2)] of a standard normal at c = P_CLIP (Huber scale)
P_PHIMAX = 24  # largest AR(1) coefficient the prewhitening trusts
P_LAMPHI = 25  # slowest forgetting of the autocorrelation (longer memory than the scale)
P_OUTLIER = 26  # |log ratio| beyond which a timing is a data error
P_STALLQ = 27  # a stall's innovation must also exceed this many innovation sigmas
P_LAMRATE = 28  # slowest forgetting of the peers' slow-step rate
P_NEFF = 29  # effective sample size (2 - lam) / lam of the P_LAMPHI memory
P_INVNEFF = 30  # 1 / P_NEFF
P_STALLMIN = 31  # log1p(intermittent_min): mean excess of an episode's slow steps to qualify
P_PARAMS = 32

NAN = np.nan

# Bits of nvmlClocksEventReasons.
B_IDLE = 0x1
B_SW_POWER = 0x4
B_HW_SLOWDOWN = 0x8
B_SW_THERMAL = 0x20
B_HW_THERMAL = 0x40
B_POWER_BRAKE = 0x80
