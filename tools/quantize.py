#!/usr/bin/env python3
"""numpy quantisers for the moeserve test models (used by tools/gen_model.py).

    quantize(rows_f32, GGMLQuantizationType.Q4_K) -> uint8 array (..., row_bytes)

Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 use gguf-py's own `gguf.quants.quantize`.  Q4_K, Q5_K and Q6_K
(which gguf-py 0.19 can only dequantise) are ports of ggml's reference quantisers
quantize_row_q4_K_ref / quantize_row_q5_K_ref / quantize_row_q6_K_ref (ggml/src/ggml-quants.c,
i.e. what llama-quantize does without an importance matrix), with make_qkx2_quants,
make_qx_quants, nearest_int (the 1.5*2^23 trick), the 12-byte 6-bit scale/min packing, and
Q6_K's int8 scales with d stored last.  They are vectorised over sub-blocks with numpy but keep
ggml's float32 operation order, sums included (sequential, not pairwise), so the bytes are the
ones a C build of ggml's reference code gives when the compiler does not contract a*b+c into
FMA.

    .venv/bin/python tools/quantize.py --selftest     # round trip through gguf.quants.dequantize

Needs only numpy and gguf-py (tools/requirements.txt).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf.constants import GGML_QUANT_SIZES

QK_K = 256
GROUP_MAX_EPS = np.float32(1e-15)
_F = np.float32
_MAGIC = np.float32(12582912.0)   # 1.5 * 2^23

# sub-blocks per numpy batch: bounds the temporaries (~40 arrays of 32*batch float32)
_BATCH = 1 << 14

K_TYPES = (QT.Q4_K, QT.Q5_K, QT.Q6_K)
LEGACY_TYPES = (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1)


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int: (bits(v + 12582912.f) & 0x7fffff) - 0x400000 (round half to even)."""
    s = np.asarray(v, dtype=np.float32) + _MAGIC
    return (s.view(np.int32) & np.int32(0x007fffff)) - np.int32(0x00400000)


def _seqsum(a: np.ndarray) -> np.ndarray:
    """Sum over axis 0 in C loop order: ((0 + a[0]) + a[1]) + ..."""
    acc = np.zeros(a.shape[1:], np.float32)
    for i in range(a.shape[0]):
        acc += a[i]
    return acc


def _f16(v: np.ndarray) -> np.ndarray:
    """GGML_FP32_TO_FP16 (round to nearest even) then back to f32."""
    return v.astype(np.float16).astype(np.float32)


# --------------------------------------------------------------------------------------
# make_qkx2_quants (use_mad = false), vectorised: X, W are (n, S) = one column per sub-block
# --------------------------------------------------------------------------------------
def _make_qkx2_quants(X, W, nmax: int, rmin: float, rdelta: float, nstep: int):
    n, S = X.shape
    mn = X.min(axis=0)
    mx = X.max(axis=0)
    sum_w = W[0].copy()
    sum_x = sum_w * X[0]
    for i in range(1, n):
        sum_w += W[i]
        sum_x += W[i] * X[i]
    mn = np.where(mn > 0, _F(0), mn)
    flat = mx == mn
    mn0 = mn
    rng = np.where(flat, _F(1), mx - mn)
    iscale = _F(nmax) / rng
    scale = _F(1) / iscale
    L = np.clip(nearest_int(iscale * (X - mn)), 0, nmax)
    Lf = L.astype(np.float32)
    diff = scale * Lf + mn - X
    best = _seqsum(W * (diff * diff))
    for is_ in range(nstep + 1):
        c = _F(_F(_F(rmin) + _F(_F(rdelta) * _F(is_))) + _F(nmax))
        rng = np.where(flat, _F(1), mx - mn)
        iscale = c / rng
        Laux = np.clip(nearest_int(iscale * (X - mn)), 0, nmax)
        la = Laux.astype(np.float32)
        wl = W * la
        sum_l = _seqsum(wl)
        sum_l2 = _seqsum(wl * la)
        sum_xl = _seqsum(wl * X)
        D = sum_w * sum_l2 - sum_l * sum_l
        pos = D > 0
        Dd = np.where(pos, D, _F(1))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / Dd
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / Dd
        clampm = this_min > 0
        if clampm.any():
            this_min = np.where(clampm, _F(0), this_min)
            with np.errstate(divide="ignore", invalid="ignore"):
                this_scale = np.where(clampm, sum_xl / sum_l2, this_scale)
        diff = this_scale * la + this_min - X
        cur = _seqsum(W * (diff * diff))
        upd = pos & (cur < best)
        if upd.any():
            L = np.where(upd, Laux, L)
            best = np.where(upd, cur, best)
            scale = np.where(upd, this_scale, scale)
            mn = np.where(upd, this_min, mn)
    L = np.where(flat, 0, L)
    scale = np.where(flat, _F(0), scale)
    return L, scale, -np.where(flat, mn0, mn)


def _quantize_qkx(x: np.ndarray, nmax: int, rmin: float, rdelta: float, nstep: int):
    """Shared part of quantize_row_q4_K_ref / q5_K_ref for blocks x (nb, 256).
    Returns d, dmin (f16 bits), packed 12-byte scales, L (nb, 256) ints in [0, nmax]."""
    nb = x.shape[0]
    X = np.ascontiguousarray(x.reshape(nb * 8, 32).T)          # (32, S)
    sum_x2 = _seqsum(X * X)
    av_x = np.sqrt(sum_x2 / _F(32))
    W = av_x + np.abs(X)
    L, scales, mins = _make_qkx2_quants(X, W, nmax, rmin, rdelta, nstep)
    scales = scales.reshape(nb, 8)
    mins = mins.reshape(nb, 8)
    # running max with strict '>' starting from 0 == max(0, max(...)) (no NaNs here)
    max_scale = np.maximum(scales.max(axis=1), _F(0))
    max_min = np.maximum(mins.max(axis=1), _F(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, _F(63) / np.where(max_scale > 0, max_scale, _F(1)), _F(0))
        inv_min = np.where(max_min > 0, _F(63) / np.where(max_min > 0, max_min, _F(1)), _F(0))
    ls = np.minimum(nearest_int(inv_scale[:, None] * scales) & 0xff, 63)   # (uint8_t) then MIN(63, .)
    lm = np.minimum(nearest_int(inv_min[:, None] * mins) & 0xff, 63)
    ls, lm = ls.astype(np.uint8), lm.astype(np.uint8)
    sc = np.zeros((nb, 12), np.uint8)
    sc[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    sc[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    sc[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    d16 = (max_scale / _F(63)).astype(np.float16)
    dmin16 = (max_min / _F(63)).astype(np.float16)
    # requantise with the stored (6-bit, f16) scales; get_scale_min_k4 returns exactly ls, lm
    dsub = d16.astype(np.float32)[:, None] * ls.astype(np.float32)         # (nb, 8)
    dmsub = dmin16.astype(np.float32)[:, None] * lm.astype(np.float32)
    xs = x.reshape(nb, 8, 32)
    nz = dsub != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        q = nearest_int((xs + dmsub[:, :, None]) / np.where(nz, dsub, _F(1))[:, :, None])
    q = np.clip(q, 0, nmax)
    L = L.T.reshape(nb, 8, 32)                                             # back to block order
    L = np.where(nz[:, :, None], q, L).reshape(nb, 256).astype(np.uint8)  # 'if (!d) continue'
    return d16, dmin16, sc, L


def quantize_q4_k_blocks(x: np.ndarray) -> np.ndarray:
    """quantize_row_q4_K_ref on blocks x (nb, 256) float32 -> (nb, 144) uint8."""
    nb = x.shape[0]
    d16, dmin16, sc, L = _quantize_qkx(x, 15, -1.0, 0.1, 20)
    L = L.reshape(nb, 4, 2, 32)
    qs = (L[:, :, 0, :] | (L[:, :, 1, :] << 4)).reshape(nb, 128)
    return np.concatenate([d16.view(np.uint8).reshape(nb, 2), dmin16.view(np.uint8).reshape(nb, 2), sc, qs], axis=1)


def quantize_q5_k_blocks(x: np.ndarray) -> np.ndarray:
    """quantize_row_q5_K_ref on blocks x (nb, 256) float32 -> (nb, 176) uint8."""
    nb = x.shape[0]
    d16, dmin16, sc, L = _quantize_qkx(x, 31, -0.5, 0.1, 15)
    L = L.reshape(nb, 4, 2, 32)                       # chunk c: elements 64c+l (lo), 64c+32+l (hi)
    lo, hi = L[:, :, 0, :], L[:, :, 1, :]
    qs = ((lo & 0xF) | ((hi & 0xF) << 4)).reshape(nb, 128)
    qh = np.zeros((nb, 32), np.uint8)
    for c in range(4):
        qh |= ((lo[:, c, :] >> 4) & 1) << (2 * c)
        qh |= ((hi[:, c, :] >> 4) & 1) << (2 * c + 1)
    return np.concatenate([d16.view(np.uint8).reshape(nb, 2), dmin16.view(np.uint8).reshape(nb, 2), sc, qh, qs], axis=1)


# --------------------------------------------------------------------------------------
# make_qx_quants(n=16, nmax=32, rmse_type=1, qw=NULL), vectorised over sub-blocks
# --------------------------------------------------------------------------------------
def _make_qx_quants_6(X: np.ndarray):
    """X (16, S) -> L (16, S) ints in [0, 63], scale (S,)."""
    nmax = 32
    n, S = X.shape
    ax = np.abs(X)
    imax = np.argmax(ax, axis=0)                                  # first index of max |x|
    cols = np.arange(S)
    amax = ax[imax, cols]
    mx = X[imax, cols]
    zero = amax < GROUP_MAX_EPS
    mxs = np.where(zero, _F(1), mx)
    iscale = _F(-nmax) / mxs
    W = X * X

    def sums(isc):
        l = np.clip(nearest_int(isc * X), -nmax, nmax - 1)
        lf = l.astype(np.float32)
        return l, _seqsum(W * X * lf), _seqsum(W * lf * lf)

    l, sumlx, suml2 = sums(iscale)
    L = l + nmax
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(suml2 != 0, sumlx / np.where(suml2 != 0, suml2, _F(1)), _F(0))
    best = scale * sumlx
    for is_ in range(-9, 10):
        if is_ == 0:
            continue
        c = -_F(_F(nmax) + _F(_F(0.1) * _F(is_)))
        isc = c / mxs
        l, slx, sl2 = sums(isc)
        upd = (sl2 > 0) & (slx * slx > best * sl2)
        if upd.any():
            L = np.where(upd, l + nmax, L)
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(upd, slx / np.where(upd, sl2, _F(1)), scale)
            best = np.where(upd, scale * slx, best)
    L = np.where(zero, 0, L)
    scale = np.where(zero, _F(0), scale)
    return L, scale


def quantize_q6_k_blocks(x: np.ndarray) -> np.ndarray:
    """quantize_row_q6_K_ref on blocks x (nb, 256) float32 -> (nb, 210) uint8."""
    nb = x.shape[0]
    X = np.ascontiguousarray(x.reshape(nb * 16, 16).T)         # (16, S)
    L, scales = _make_qx_quants_6(X)
    L = L.T.reshape(nb, 16, 16)
    scales = scales.reshape(nb, 16)
    # max_scale = the scale of largest |.| (first one on ties), compared with strict '>'
    absd = np.abs(scales)
    ib = np.argmax(absd, axis=1)
    max_abs = absd[np.arange(nb), ib]
    max_scale = scales[np.arange(nb), ib]
    zero = ~(max_abs >= GROUP_MAX_EPS)                          # max_abs_scale < GROUP_MAX_EPS
    ms = np.where(zero, _F(-1), max_scale)
    iscale = _F(-128) / ms
    d16 = (_F(1) / iscale).astype(np.float16)
    isc = np.minimum(nearest_int(iscale[:, None] * scales), 127).astype(np.int8)
    d = d16.astype(np.float32)[:, None] * isc.astype(np.float32)            # (nb, 16)
    nz = d != 0
    xs = x.reshape(nb, 16, 16)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = nearest_int(xs / np.where(nz, d, _F(1))[:, :, None])
    q = np.clip(q, -32, 31) + 32
    L = np.where(nz[:, :, None], q, L).reshape(nb, 2, 4, 32).astype(np.uint8)   # half h, quarter k
    ql = np.concatenate([(L[:, :, 0] & 0xF) | ((L[:, :, 2] & 0xF) << 4),
                         (L[:, :, 1] & 0xF) | ((L[:, :, 3] & 0xF) << 4)], axis=2)  # (nb, 2, 64)
    qh = (L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4) | ((L[:, :, 3] >> 4) << 6)
    out = np.concatenate([ql.reshape(nb, 128), qh.reshape(nb, 64), isc.view(np.uint8),
                          d16.view(np.uint8).reshape(nb, 2)], axis=1)
    out[zero] = 0                                               # memset(&y[i], 0, ...) and d = 0
    return out


_K_FUNCS = {QT.Q4_K: quantize_q4_k_blocks, QT.Q5_K: quantize_q5_k_blocks, QT.Q6_K: quantize_q6_k_blocks}


def quantize(a: np.ndarray, qt: QT) -> np.ndarray:
    """Quantise float32 rows (..., n) with n a multiple of the block size; returns uint8
    (..., n / block_elems * block_bytes), same bytes as ggml's reference quantiser."""
    a = np.asarray(a, dtype=np.float32)
    if qt in _K_FUNCS:
        be, bb = GGML_QUANT_SIZES[qt]
        if a.shape[-1] % be:
            raise ValueError(f"row length {a.shape[-1]} is not a multiple of {be} ({qt.name})")
        blocks = a.reshape(-1, be)
        out = np.empty((blocks.shape[0], bb), np.uint8)
        step = max(1, _BATCH // (be // 32))
        for i in range(0, blocks.shape[0], step):
            out[i:i + step] = _K_FUNCS[qt](blocks[i:i + step])
        return out.reshape(*a.shape[:-1], a.shape[-1] // be * bb)
    return gguf.quants.quantize(a, qt)


# --------------------------------------------------------------------------------------
# self test: round trip through gguf-py's dequantiser
# --------------------------------------------------------------------------------------
ROUNDTRIP_TYPES = (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q4_K, QT.Q5_K, QT.Q6_K)
# maximum allowed RMS(error)/RMS(x) on the N(0,1) rows (measured: Q8_0 0.0054, Q4_0 0.086,
# Q4_1 0.078, Q5_0 0.043, Q5_1 0.038, Q4_K 0.071, Q5_K 0.036, Q6_K 0.018)
MAX_REL_RMS = {QT.Q8_0: 0.0065, QT.Q4_0: 0.10, QT.Q4_1: 0.09, QT.Q5_0: 0.05, QT.Q5_1: 0.045,
               QT.Q4_K: 0.08, QT.Q5_K: 0.042, QT.Q6_K: 0.021}


def selftest(n_rows: int = 512, n_cols: int = 4096, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    data = {
        "gaussian": rng.standard_normal((n_rows, n_cols), dtype=np.float32),
        "gauss+offset": (rng.standard_normal((64, n_cols), dtype=np.float32) * _F(0.1) + _F(1.0)),
        "uniform": rng.uniform(-1, 1, (64, n_cols)).astype(np.float32),
        "heavy-tail": rng.standard_t(3, (64, n_cols)).astype(np.float32),
    }
    special = np.zeros((4, n_cols), np.float32)
    special[1] = 1.0                                   # constant positive
    special[2] = -3.0                                  # constant negative
    special[3, ::7] = 5.0                              # sparse
    data["special"] = special
    bad = 0
    for qt in ROUNDTRIP_TYPES:
        for name, x in data.items():
            t0 = time.perf_counter()
            q = quantize(x, qt)
            dt = time.perf_counter() - t0
            be, bb = GGML_QUANT_SIZES[qt]
            assert q.dtype == np.uint8 and q.shape == (x.shape[0], x.shape[1] // be * bb), q.shape
            y = gguf.quants.dequantize(q, qt).reshape(x.shape)
            finite = bool(np.all(np.isfinite(y)))
            rel = float(np.sqrt(np.mean((y.astype(np.float64) - x) ** 2)) /
                        max(np.sqrt(np.mean(x.astype(np.float64) ** 2)), 1e-30))
            ok = finite
            if name == "gaussian":
                ok = ok and rel < MAX_REL_RMS[qt]
            elif name == "special":
                ok = ok and rel < 2 * MAX_REL_RMS[qt]
            print(f"{qt.name:5s} {name:12s} rel RMS err {rel:.5f}  finite {finite}  "
                  f"{x.size / max(dt, 1e-9) / 1e6:7.1f} M elem/s  {'ok' if ok else 'FAIL'}")
            bad += not ok
    print("selftest:", "PASS" if not bad else f"{bad} FAILURES")
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--selftest", action="store_true", help="round-trip test through gguf.quants.dequantize")
    ap.add_argument("--rows", type=int, default=512)
    args = ap.parse_args(argv)
    if args.selftest:
        return selftest(n_rows=args.rows)
    ap.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
