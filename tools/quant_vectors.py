#!/usr/bin/env python3
"""Dequantisation test vectors for moeserve's C dequantisers (tests/data/quant/*.bin).

    .venv/bin/python tools/quant_vectors.py --out tests/data/quant          # write + verify
    .venv/bin/python tools/quant_vectors.py --out tests/data/quant --check  # verify existing files only

For each of Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, Q2_K, Q3_K, IQ4_NL, IQ4_XS and MXFP4
it writes `<type>.bin` (lower case):

    offset 0   char[4]  magic "MQV1"
           4   u32      ggml type id (Q4_0=2, Q4_1=3, Q5_0=6, Q5_1=7, Q8_0=8, Q2_K=10, Q3_K=11,
                        Q4_K=12, Q5_K=13, Q6_K=14, IQ4_NL=20, IQ4_XS=23, MXFP4=39)
           8   u32      n_blocks
          12   u32      block_bytes   (bytes of one block)
          16   u32      block_elems   (values of one block: 32, or 256 for the K-quants)
          20   u8[n_blocks*block_bytes]      raw blocks
          ...  f32[n_blocks*block_elems]     gguf-py's gguf.quants.dequantize() of those blocks

(all little-endian, no padding).  Blocks are seeded random bytes; every f16 field (d, dmin, m) is
drawn from a mix of ordinary scales, +-0, f16 subnormals (0x0001, 0x03ff, ...), the smallest
normal, the largest finite half (0x7bff / 0xfbff) and random finite halves (never exponent 0x1f,
so no NaN/inf scale); Q6_K's int8 scales include -128 and 127.  MXFP4's E8M0 exponent byte is
drawn from 0..252 (0 and 1 give f32 subnormal scales; above 252, 12 * 2^(e-128) overflows f32),
with the extremes in the first blocks.  The first blocks of every file
cover each special value deterministically.

Every file is checked against an independent scalar re-implementation of ggml's dequantize_row_*
(one float32 operation at a time, in ggml's order): the floats must match bit for bit, and all
must be finite.
"""
from __future__ import annotations

import argparse
import math
import os
import struct
import sys

import numpy as np

from gguf import GGMLQuantizationType as QT
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

MAGIC = b"MQV1"
SEED = 20250101
# New types go at the end: each file's seed is its index here, so the older files stay
# byte-identical.  The later files have fewer blocks to keep tests/data small.
TYPES = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k",
         "q2_k", "q3_k", "iq4_nl", "iq4_xs", "mxfp4")
QTYPE = {t: QT[t.upper()] for t in TYPES}
N_BLOCKS = {"q8_0": 256, "q4_0": 256, "q4_1": 256, "q5_0": 256, "q5_1": 256,
            "q4_k": 128, "q5_k": 128, "q6_k": 128,
            "q2_k": 20, "q3_k": 20, "iq4_nl": 64, "iq4_xs": 20, "mxfp4": 64}
# byte offsets of the f16 fields inside a block
HALF_FIELDS = {"q8_0": (0,), "q4_0": (0,), "q4_1": (0, 2), "q5_0": (0,), "q5_1": (0, 2),
               "q4_k": (0, 2), "q5_k": (0, 2), "q6_k": (208,),
               "q2_k": (80, 82), "q3_k": (108,), "iq4_nl": (0,), "iq4_xs": (0,), "mxfp4": ()}
# MXFP4 exponents that must appear: subnormal scales, 2^-1 .. 2^1, the largest finite products
SPECIAL_E8M0 = (0, 1, 2, 3, 126, 127, 128, 129, 250, 251, 252)

SPECIAL_HALVES = (0x0000, 0x8000,            # +0, -0
                  0x0001, 0x03ff, 0x8001, 0x83ff, 0x0200,   # subnormals
                  0x0400, 0x8400,            # smallest normal
                  0x7bff, 0xfbff,            # largest finite
                  0x3c00, 0xbc00, 0x1400, 0x9400, 0x7800)   # 1, -1, ~0.001, 2^15


def half_mix(rng: np.random.Generator, n: int) -> np.ndarray:
    """n f16 bit patterns (uint16), never exponent 0x1f."""
    out = np.empty(n, np.uint16)
    cat = rng.choice(6, size=n, p=[0.35, 0.08, 0.12, 0.05, 0.05, 0.35])
    # 0: ordinary scales (what a quantiser writes): |N(0,1)| * 10^U(-4,-1), mostly positive
    v = np.abs(rng.standard_normal(n)) * 10.0 ** rng.uniform(-4, -1, n)
    v = np.where(rng.random(n) < 0.2, -v, v)
    ordinary = v.astype(np.float16).view(np.uint16)
    # 1: +-0
    zero = np.where(rng.random(n) < 0.5, 0x0000, 0x8000).astype(np.uint16)
    # 2: subnormals (mantissa 1..0x3ff), random sign
    sub = rng.integers(1, 0x400, n).astype(np.uint16) | (rng.integers(0, 2, n).astype(np.uint16) << 15)
    # 3: largest finite
    big = np.where(rng.random(n) < 0.5, 0x7bff, 0xfbff).astype(np.uint16)
    # 4: special list
    spec = np.array(SPECIAL_HALVES, np.uint16)[rng.integers(0, len(SPECIAL_HALVES), n)]
    # 5: random finite halves
    r = rng.integers(0, 1 << 16, n).astype(np.uint16)
    r = np.where((r & 0x7c00) == 0x7c00, r & 0xbfff, r).astype(np.uint16)  # exponent 0x1f -> 0x0f
    for k, src in enumerate((ordinary, zero, sub, big, spec, r)):
        out[cat == k] = src[cat == k]
    assert not np.any((out & 0x7c00) == 0x7c00)
    return out


def make_blocks(typ: str, rng: np.random.Generator) -> np.ndarray:
    qt = QTYPE[typ]
    _, bb = GGML_QUANT_SIZES[qt]
    n = N_BLOCKS[typ]
    blocks = rng.integers(0, 256, size=(n, bb), dtype=np.uint8)
    fields = HALF_FIELDS[typ]
    for off in fields:
        h = half_mix(rng, n)
        # deterministic coverage of every special value in the first blocks (each field its
        # own phase so that (d, dmin) pairs vary)
        k = len(SPECIAL_HALVES)
        phase = 0 if off == fields[0] else 5
        for i in range(k):
            h[i] = SPECIAL_HALVES[(i + phase) % k]
        blocks[:, off:off + 2] = h.view(np.uint8).reshape(n, 2)
    if typ == "mxfp4":
        e = rng.integers(0, 253, n).astype(np.uint8)
        e[:len(SPECIAL_E8M0)] = SPECIAL_E8M0
        # most real exponents sit near 127 (weights of order 1e-3 .. 1)
        near = rng.random(n) < 0.5
        e[len(SPECIAL_E8M0):] = np.where(near, rng.integers(110, 130, n), e)[len(SPECIAL_E8M0):]
        blocks[:, 0] = e
        blocks[len(SPECIAL_E8M0), 1:] = 0x88    # both zero codes (+0 and "-0", both 0)
        blocks[len(SPECIAL_E8M0) + 1, 1:] = 0x77  # the largest magnitude code
    if typ == "q6_k":
        sc = blocks[:, 192:208].view(np.int8)
        sc[0, :] = -128
        sc[1, :] = 127
        sc[2, 0::2], sc[2, 1::2] = -128, 127
        # sprinkle extremes into the others
        m = rng.random(sc.shape) < 0.1
        sc[m] = np.where(rng.random(int(m.sum())) < 0.5, -128, 127)
        sc[3, :] = 0
    if typ in ("q4_k", "q5_k"):
        blocks[0, 4:16] = 0xff      # all 6-bit scales and mins = 63
        blocks[1, 4:16] = 0x00
        blocks[2, 4:16] = 0x3f      # low 6 bits set, high bits clear
    if typ in ("q2_k", "q3_k"):
        sc = (0, 16) if typ == "q2_k" else (96, 108)
        blocks[0, sc[0]:sc[1]] = 0xff      # all scales (and Q2_K mins) at their maximum
        blocks[1, sc[0]:sc[1]] = 0x00      # Q3_K: all scales -32
        blocks[2, (16 if typ == "q2_k" else 0):(80 if typ == "q2_k" else 96)] = 0x00  # all q = 0 (Q3_K: -4)
    if typ == "iq4_xs":
        blocks[0, 2:8] = 0xff              # all scales 63 - 32 = 31
        blocks[1, 2:8] = 0x00              # all scales -32
        blocks[2, 2:8] = (0xaa, 0xaa, 0, 0, 0, 0)  # every scale 32 - 32 = 0
    if typ in ("q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "iq4_nl"):
        # a block of all-zero and one of all-ones payload
        off = fields[-1] + 2
        blocks[k, off:] = 0x00
        blocks[k + 1, off:] = 0xff
    return blocks


# --------------------------------------------------------------------------------------
# Scalar reference: ggml's dequantize_row_* one float32 operation at a time
# --------------------------------------------------------------------------------------
F = np.float32


def fp16_to_fp32(bits: int) -> np.float32:
    """IEEE binary16 -> float32, from the bits (independent of numpy's float16)."""
    s = -1.0 if bits & 0x8000 else 1.0
    e = (bits >> 10) & 0x1f
    m = bits & 0x3ff
    assert e != 0x1f
    if e == 0:
        v = s * math.ldexp(m, -24)
    else:
        v = s * math.ldexp(1024 + m, e - 25)
    return F(v)  # exact


def u16(b, o):
    return b[o] | (b[o + 1] << 8)


def get_scale_min_k4(j, q):
    if j < 4:
        return q[j] & 63, q[j + 4] & 63
    return (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4)


# ggml-common.h kvalues_iq4nl / kvalues_mxfp4 (typed in again, not taken from gguf-py)
KV_IQ4NL = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
KV_MXFP4 = (0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12)


def ref_block(typ: str, b: bytes) -> list:
    y = []
    if typ == "q8_0":
        d = fp16_to_fp32(u16(b, 0))
        for j in range(32):
            q = b[2 + j] - 256 if b[2 + j] > 127 else b[2 + j]
            y.append(F(q) * d)
    elif typ in ("q4_0", "q4_1"):
        d = fp16_to_fp32(u16(b, 0))
        m = fp16_to_fp32(u16(b, 2)) if typ == "q4_1" else None
        qs = b[4:] if typ == "q4_1" else b[2:]
        y = [None] * 32
        for j in range(16):
            x0, x1 = qs[j] & 0xF, qs[j] >> 4
            if typ == "q4_0":
                y[j], y[j + 16] = F(x0 - 8) * d, F(x1 - 8) * d
            else:
                y[j], y[j + 16] = F(x0) * d + m, F(x1) * d + m
    elif typ in ("q5_0", "q5_1"):
        d = fp16_to_fp32(u16(b, 0))
        o = 2
        m = None
        if typ == "q5_1":
            m = fp16_to_fp32(u16(b, 2))
            o = 4
        qh = struct.unpack_from("<I", b, o)[0]
        qs = b[o + 4:]
        y = [None] * 32
        for j in range(16):
            xh0 = ((qh >> (j + 0)) << 4) & 0x10
            xh1 = ((qh >> (j + 12))) & 0x10
            x0 = (qs[j] & 0xF) | xh0
            x1 = (qs[j] >> 4) | xh1
            if typ == "q5_0":
                y[j], y[j + 16] = F(x0 - 16) * d, F(x1 - 16) * d
            else:
                y[j], y[j + 16] = F(x0) * d + m, F(x1) * d + m
    elif typ in ("q4_k", "q5_k"):
        d = fp16_to_fp32(u16(b, 0))
        mn = fp16_to_fp32(u16(b, 2))
        sc12 = b[4:16]
        if typ == "q4_k":
            qh, ql = None, b[16:]
        else:
            qh, ql = b[16:48], b[48:]
        is_ = 0
        u1, u2 = 1, 2
        for j in range(0, 256, 64):
            s, mm = get_scale_min_k4(is_ + 0, sc12)
            d1, m1 = d * F(s), mn * F(mm)
            s, mm = get_scale_min_k4(is_ + 1, sc12)
            d2, m2 = d * F(s), mn * F(mm)
            q = ql[(j // 64) * 32:(j // 64) * 32 + 32]
            for l in range(32):
                v = q[l] & 0xF
                if qh is not None and qh[l] & u1:
                    v += 16
                y.append(d1 * F(v) - m1)
            for l in range(32):
                v = q[l] >> 4
                if qh is not None and qh[l] & u2:
                    v += 16
                y.append(d2 * F(v) - m2)
            is_ += 2
            u1 <<= 2
            u2 <<= 2
    elif typ == "q6_k":
        ql, qh = b[0:128], b[128:192]
        sc = [x - 256 if x > 127 else x for x in b[192:208]]
        d = fp16_to_fp32(u16(b, 208))
        y = [None] * 256
        for h in range(2):
            for l in range(32):
                is_ = l // 16
                L, H, S = ql[64 * h:], qh[32 * h:], sc[8 * h:]
                q1 = ((L[l] & 0xF) | (((H[l] >> 0) & 3) << 4)) - 32
                q2 = ((L[l + 32] & 0xF) | (((H[l] >> 2) & 3) << 4)) - 32
                q3 = ((L[l] >> 4) | (((H[l] >> 4) & 3) << 4)) - 32
                q4 = ((L[l + 32] >> 4) | (((H[l] >> 6) & 3) << 4)) - 32
                o = 128 * h
                y[o + l] = d * F(S[is_ + 0]) * F(q1)        # (d*sc)*q, as C parses it
                y[o + l + 32] = d * F(S[is_ + 2]) * F(q2)
                y[o + l + 64] = d * F(S[is_ + 4]) * F(q3)
                y[o + l + 96] = d * F(S[is_ + 6]) * F(q4)
    elif typ == "q2_k":
        sc, qs = b[0:16], b[16:80]
        d, mn = fp16_to_fp32(u16(b, 80)), fp16_to_fp32(u16(b, 82))
        for n in range(2):          # ggml: for n in 0, 128; shift 0, 2, 4, 6; two halves of 16
            q = qs[32 * n:]
            for j in range(4):
                for h in range(2):
                    s = sc[8 * n + 2 * j + h]
                    dl, ml = d * F(s & 0xF), mn * F(s >> 4)
                    for l in range(16):
                        y.append(dl * F((q[16 * h + l] >> (2 * j)) & 3) - ml)
    elif typ == "q3_k":
        hm, qs, s12 = b[0:32], b[32:96], b[96:108]
        d = fp16_to_fp32(u16(b, 108))
        aux = list(struct.unpack("<3I", bytes(s12)))
        tmp = aux[2]
        k1, k2 = 0x03030303, 0x0f0f0f0f
        a = [(aux[0] & k2) | (((tmp >> 0) & k1) << 4), (aux[1] & k2) | (((tmp >> 2) & k1) << 4),
             ((aux[0] >> 4) & k2) | (((tmp >> 4) & k1) << 4), ((aux[1] >> 4) & k2) | (((tmp >> 6) & k1) << 4)]
        scales = [x - 256 if x > 127 else x for x in struct.pack("<4I", *a)]
        m, is_ = 1, 0
        for n in range(2):
            q = qs[32 * n:]
            for j in range(4):
                for h in range(2):
                    dl = d * F(scales[is_] - 32)
                    is_ += 1
                    for l in range(16):
                        v = ((q[16 * h + l] >> (2 * j)) & 3) - (0 if hm[16 * h + l] & m else 4)
                        y.append(dl * F(v))
                m <<= 1
    elif typ == "iq4_nl":
        d = fp16_to_fp32(u16(b, 0))
        y = [None] * 32
        for j in range(16):
            y[j], y[j + 16] = d * F(KV_IQ4NL[b[2 + j] & 0xF]), d * F(KV_IQ4NL[b[2 + j] >> 4])
    elif typ == "iq4_xs":
        d = fp16_to_fp32(u16(b, 0))
        sh, sl, qs = u16(b, 2), b[4:8], b[8:]
        for ib in range(8):
            ls = ((sl[ib // 2] >> (4 * (ib % 2))) & 0xF) | (((sh >> (2 * ib)) & 3) << 4)
            dl = d * F(ls - 32)
            blk = [None] * 32
            for j in range(16):
                blk[j] = dl * F(KV_IQ4NL[qs[16 * ib + j] & 0xF])
                blk[j + 16] = dl * F(KV_IQ4NL[qs[16 * ib + j] >> 4])
            y += blk
    elif typ == "mxfp4":
        e = b[0]
        bits = (0x00200000 << e) if e < 2 else ((e - 1) << 23)
        d = np.array([bits], np.uint32).view(np.float32)[0]
        y = [None] * 32
        for j in range(16):
            y[j], y[j + 16] = F(KV_MXFP4[b[1 + j] & 0xF]) * d, F(KV_MXFP4[b[1 + j] >> 4]) * d
    else:
        raise ValueError(typ)
    return y


# --------------------------------------------------------------------------------------
def write_file(path: str, typ: str, blocks: np.ndarray, values: np.ndarray) -> None:
    qt = QTYPE[typ]
    be, bb = GGML_QUANT_SIZES[qt]
    n = blocks.shape[0]
    with open(path, "wb") as f:
        f.write(MAGIC + struct.pack("<4I", int(qt), n, bb, be))
        f.write(blocks.astype(np.uint8).tobytes())
        f.write(values.astype("<f4").tobytes())


def read_file(path: str):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:4] == MAGIC, "bad magic"
    qt, n, bb, be = struct.unpack_from("<4I", data, 4)
    off = 20
    blocks = np.frombuffer(data, np.uint8, n * bb, off).reshape(n, bb)
    off += n * bb
    values = np.frombuffer(data, "<f4", n * be, off).reshape(n, be)
    assert off + n * be * 4 == len(data), "trailing bytes"
    return qt, blocks, values


def verify(path: str, typ: str) -> dict:
    qt, blocks, values = read_file(path)
    assert qt == int(QTYPE[typ]), f"{path}: type id {qt}"
    be, bb = GGML_QUANT_SIZES[QTYPE[typ]]
    assert blocks.shape[1] == bb and values.shape[1] == be
    assert np.all(np.isfinite(values)), f"{path}: non-finite values"
    gg = dequantize(blocks, QTYPE[typ]).reshape(values.shape)
    assert np.array_equal(gg.view(np.uint32), values.view(np.uint32)), f"{path}: != gguf-py dequantize"
    n_zero_neg = 0
    for i in range(blocks.shape[0]):
        ref = np.array(ref_block(typ, bytes(blocks[i])), np.float32)
        bad = np.nonzero(ref.view(np.uint32) != values[i].view(np.uint32))[0]
        assert bad.size == 0, (f"{path}: block {i} element {bad[0]}: scalar ggml {ref[bad[0]]!r} "
                               f"vs file {values[i][bad[0]]!r}")
        n_zero_neg += int(np.sum(values[i].view(np.uint32) == 0x80000000))
    return dict(n_blocks=blocks.shape[0], bytes=os.path.getsize(path), neg_zero=n_zero_neg,
                max_abs=float(np.abs(values).max()),
                min_abs_nonzero=float(np.abs(values[values != 0]).min()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/data/quant")
    ap.add_argument("--check", action="store_true", help="only verify the existing files")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for i, typ in enumerate(TYPES):
        path = os.path.join(args.out, f"{typ}.bin")
        if not args.check:
            rng = np.random.default_rng([SEED, i])
            blocks = make_blocks(typ, rng)
            values = dequantize(blocks, QTYPE[typ]).astype(np.float32, copy=False)
            write_file(path, typ, blocks, values.reshape(blocks.shape[0], -1))
        st = verify(path, typ)
        print(f"{path}: {st['n_blocks']} blocks, {st['bytes']} bytes, bit-exact vs scalar ggml reference; "
              f"max|x| {st['max_abs']:.4g}, min nonzero |x| {st['min_abs_nonzero']:.3g}, -0.0 values {st['neg_zero']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
