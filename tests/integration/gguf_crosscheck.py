#!/usr/bin/env python3
"""Cross-check moeserve's GGUF reader and writer against gguf-py, in both directions.

Usage: gguf_crosscheck.py /path/to/gguf_tool

1. `gguf_tool write-all-types` writes a file with our writer; gguf.GGUFReader must see exactly
   the keys, types, values and tensors listed in ALL_TYPES below (which mirrors gguf_tool.c).
2. gguf.GGUFWriter writes files with many keys, arrays and tensors (default alignment and 64);
   `gguf_tool dump` (our reader) must report the same keys, values, shapes, types, offsets and
   payload bytes as what was written, and as gguf.GGUFReader reports.

Prints `N passed, N failed` last and exits non-zero on any failure.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT


class Tally:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print(f"FAIL: {what}", flush=True)
        return ok


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def f32(x):
    return float(np.float32(x))


def same_scalar(vtype, got, want):
    if vtype == VT.FLOAT32:
        return f32(got) == f32(want) or (math.isnan(f32(got)) and math.isnan(f32(want)))
    if vtype == VT.FLOAT64:
        return float(got) == float(want)
    if vtype == VT.BOOL:
        return bool(got) == bool(want)
    if vtype == VT.STRING:
        return got == want
    return int(got) == int(want)


# ---- part 1: our writer, their reader ------------------------------------------------------

# (key, type, value) for scalars; (key, ARRAY, (elem_type, values)) for arrays.
ALL_TYPES = [
    ("general.architecture", VT.STRING, "test"),
    ("scalar.u8", VT.UINT8, 200),
    ("scalar.i8", VT.INT8, -100),
    ("scalar.u16", VT.UINT16, 60000),
    ("scalar.i16", VT.INT16, -30000),
    ("scalar.u32", VT.UINT32, 4000000000),
    ("scalar.i32", VT.INT32, -2000000000),
    ("scalar.f32", VT.FLOAT32, 1.5),
    ("scalar.bool", VT.BOOL, True),
    ("scalar.str", VT.STRING, "hello, wörld"),
    ("scalar.u64", VT.UINT64, (1 << 63) + 5),
    ("scalar.i64", VT.INT64, -(1 << 62)),
    ("scalar.f64", VT.FLOAT64, 3.141592653589793),
    ("array.u8", VT.ARRAY, (VT.UINT8, [0, 1, 255])),
    ("array.i8", VT.ARRAY, (VT.INT8, [-128, 0, 127])),
    ("array.u16", VT.ARRAY, (VT.UINT16, [0, 1, 65535])),
    ("array.i16", VT.ARRAY, (VT.INT16, [-32768, 0, 32767])),
    ("array.u32", VT.ARRAY, (VT.UINT32, [0, 1, 4294967295])),
    ("array.i32", VT.ARRAY, (VT.INT32, [-(1 << 31), -1, (1 << 31) - 1])),
    ("array.f32", VT.ARRAY, (VT.FLOAT32, [0.5, -1.25, 1e30])),
    ("array.bool", VT.ARRAY, (VT.BOOL, [True, False, True, True])),
    ("array.u64", VT.ARRAY, (VT.UINT64, [0, (1 << 64) - 1])),
    ("array.i64", VT.ARRAY, (VT.INT64, [-(1 << 63), (1 << 63) - 1])),
    ("array.f64", VT.ARRAY, (VT.FLOAT64, [1e-300, -2.5])),
    ("array.str", VT.ARRAY, (VT.STRING, ["alpha", "", "ünï 中文", "quote\" back\\slash\nnewline\ttab"])),
    ("array.nested", VT.ARRAY, (VT.ARRAY, [(VT.INT32, [1, 2, 3]), (VT.INT32, [4]), (VT.INT32, [-5, 6])])),
]


def all_types_tensors():
    """The payloads gguf_tool.c writes: name -> (type, ne, bytes)."""
    f32s = (np.arange(12, dtype=np.float32) / 2 - 1).tobytes()
    f16s = b"".join(bytes([0, 0x3C + i]) for i in range(8))
    q8 = b"".join(bytes([0x00, 0x3C]) + bytes((j - 16 + b) & 0xFF for j in range(32)) for b in range(4))
    return {
        "tensor.f32": (QT.F32, [4, 3], f32s),
        "tensor.f16": (QT.F16, [8], f16s),
        "tensor.q8_0": (QT.Q8_0, [64, 2], q8),
    }


def rebuild(parts, i, vtype):
    """Decodes a reader field's parts back into (value, next index), keeping nesting that
    ReaderField.contents() flattens."""
    if vtype == VT.ARRAY:
        elem = VT(int(parts[i][0]))
        n = int(parts[i + 1][0])
        i += 2
        items = []
        for _ in range(n):
            item, i = rebuild(parts, i, elem)
            items.append(item)
        return (elem, items), i
    if vtype == VT.STRING:
        return bytes(parts[i + 1]).decode("utf-8"), i + 2
    return parts[i].tolist()[0], i + 1


def same_value(vtype, got, want):
    """got/want: scalars, or (elem_type, [items]) for arrays."""
    if vtype != VT.ARRAY:
        return same_scalar(vtype, got, want)
    (g_elem, g_items), (w_elem, w_items) = got, want
    if g_elem != w_elem or len(g_items) != len(w_items):
        return False
    return all(same_value(w_elem, g, w) for g, w in zip(g_items, w_items))


def part1(t, tool, tmp):
    path = os.path.join(tmp, "all_types.gguf")
    r = subprocess.run([tool, "write-all-types", path], capture_output=True, text=True)
    if not t.check(r.returncode == 0, f"write-all-types exit {r.returncode}: {r.stderr}"):
        return
    reader = gguf.GGUFReader(path)
    keys = [k for k in reader.fields if not k.startswith("GGUF.")]
    t.check(keys == [k for k, _, _ in ALL_TYPES], f"part1 key list/order: {keys}")
    for key, vtype, want in ALL_TYPES:
        field = reader.fields.get(key)
        if not t.check(field is not None, f"part1 {key} missing"):
            continue
        t.check(field.types[0] == vtype, f"part1 {key} type {field.types[0]} want {vtype}")
        got, _ = rebuild(field.parts, 3, vtype)  # parts 0..2: key length, key, value type
        t.check(same_value(vtype, got, want), f"part1 {key} value {got!r} want {want!r}")
        if vtype == VT.ARRAY and want[0] != VT.ARRAY:
            flat = field.contents()
            t.check(same_value(vtype, (want[0], flat), want), f"part1 {key} contents() {flat!r}")
    expect = all_types_tensors()
    t.check([x.name for x in reader.tensors] == list(expect), "part1 tensor names/order")
    for x in reader.tensors:
        if x.name not in expect:
            continue
        qtype, ne, payload = expect[x.name]
        t.check(x.tensor_type == qtype, f"part1 {x.name} type {x.tensor_type}")
        t.check([int(d) for d in x.shape] == ne, f"part1 {x.name} shape {list(x.shape)} want {ne}")
        t.check(int(x.n_bytes) == len(payload), f"part1 {x.name} n_bytes {x.n_bytes}")
        t.check(x.data.tobytes() == payload, f"part1 {x.name} payload bytes")
        t.check((x.data_offset - reader.data_offset) % 32 == 0, f"part1 {x.name} offset alignment")


# ---- part 2: their writer, our reader ------------------------------------------------------

def writer_kvs():
    """(key, type, value) written with GGUFWriter; array values are (elem_type, items)."""
    return [
        ("test.u8", VT.UINT8, 7),
        ("test.i8", VT.INT8, -7),
        ("test.u16", VT.UINT16, 65535),
        ("test.i16", VT.INT16, -32768),
        ("test.u32", VT.UINT32, 123456789),
        ("test.i32", VT.INT32, -123456789),
        ("test.f32", VT.FLOAT32, 0.1),
        ("test.bool_t", VT.BOOL, True),
        ("test.bool_f", VT.BOOL, False),
        ("test.str", VT.STRING, "grüße \"quoted\" \\ 日本語"),
        ("test.str_empty", VT.STRING, ""),
        ("test.u64", VT.UINT64, (1 << 64) - 1),
        ("test.i64", VT.INT64, -(1 << 63)),
        ("test.f64", VT.FLOAT64, -1.0 / 3.0),
        ("arr.u8", VT.ARRAY, (VT.UINT8, [1, 2, 255])),
        ("arr.i16", VT.ARRAY, (VT.INT16, [-1, 2, -3])),
        ("arr.u32", VT.ARRAY, (VT.UINT32, list(range(100)))),
        ("arr.i32", VT.ARRAY, (VT.INT32, [-5, 0, 5])),
        ("arr.f32", VT.ARRAY, (VT.FLOAT32, [0.1, 0.2, -3.5])),
        ("arr.bool", VT.ARRAY, (VT.BOOL, [False, True])),
        ("arr.u64", VT.ARRAY, (VT.UINT64, [1 << 40, 3])),
        ("arr.i64", VT.ARRAY, (VT.INT64, [-(1 << 40), 3])),
        ("arr.f64", VT.ARRAY, (VT.FLOAT64, [1e100, -1e-100])),
        ("tokenizer.ggml.tokens", VT.ARRAY, (VT.STRING, [f"tok{i}" for i in range(500)] + ["", "ü", "\n"])),
        ("arr.nested", VT.ARRAY, (VT.ARRAY, [(VT.INT32, [1, 2]), (VT.INT32, [3, 4, 5])])),
        ("arr.nested_str", VT.ARRAY, (VT.ARRAY, [(VT.STRING, ["a", "bc"]), (VT.STRING, ["d"])])),
    ]


def to_py(vtype, value):
    """Our (elem_type, items) form to the plain lists GGUFWriter packs."""
    if vtype != VT.ARRAY:
        return value
    elem, items = value
    return [to_py(elem, x) for x in items]


def writer_tensors():
    """name -> (qtype, ne, bytes, array handed to GGUFWriter)."""
    rng = np.random.default_rng(1234)
    out = {}
    a = rng.standard_normal((3, 5), dtype=np.float32)
    out["w.f32"] = (QT.F32, [5, 3], a)
    b = rng.standard_normal((2, 3, 4), dtype=np.float32)
    out["w.f32_3d"] = (QT.F32, [4, 3, 2], b)
    c = rng.standard_normal((7,)).astype(np.float16)
    out["w.f16"] = (QT.F16, [7], c)
    d = np.arange(-6, 6, dtype=np.int32).reshape(4, 3)
    out["w.i32"] = (QT.I32, [3, 4], d)
    x = rng.standard_normal((4, 64), dtype=np.float32)
    out["w.q8_0"] = (QT.Q8_0, [64, 4], gguf.quants.quantize(x, QT.Q8_0))
    for qtype, shape in ((QT.BF16, (3, 32)), (QT.Q4_0, (2, 64)), (QT.Q4_K, (2, 256))):
        if not hasattr(QT, qtype.name):
            continue
        try:
            q = gguf.quants.quantize(rng.standard_normal(shape, dtype=np.float32), qtype)
        except Exception:  # quantizer not implemented in this gguf-py
            continue
        out[f"w.{qtype.name.lower()}"] = (qtype, [shape[1], shape[0]], q)
    return out


def write_with_gguf_py(path, alignment):
    w = gguf.GGUFWriter(path, arch="crosscheck")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, vtype, value in writer_kvs():
        if vtype == VT.ARRAY:
            w.add_key_value(key, to_py(vtype, value), VT.ARRAY, sub_type=value[0])
        else:
            w.add_key_value(key, value, vtype)
    tensors = writer_tensors()
    for name, (qtype, _ne, arr) in tensors.items():
        w.add_tensor(name, arr, raw_dtype=qtype if arr.dtype == np.uint8 else None)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return tensors


def from_dump(vtype_name, value):
    """A dump value back to our (elem_type, items) form."""
    vtype = VT[vtype_name]
    if vtype != VT.ARRAY:
        return vtype, value
    elem = VT[value["elem_type"]]
    if elem == VT.ARRAY:
        items = [from_dump("ARRAY", x)[1] for x in value["value"]]
    else:
        items = list(value["value"])
    return vtype, (elem, items)


def part2(t, tool, tmp, alignment):
    tag = f"part2[align={alignment or 32}]"
    path = os.path.join(tmp, f"pywritten_{alignment or 32}.gguf")
    tensors = write_with_gguf_py(path, alignment)
    r = subprocess.run([tool, "dump", path], capture_output=True)
    if not t.check(r.returncode == 0, f"{tag} dump exit {r.returncode}: {r.stderr!r}"):
        return
    try:
        dump = json.loads(r.stdout.decode("utf-8"))
    except ValueError as e:
        t.check(False, f"{tag} dump is not JSON: {e}")
        return
    reader = gguf.GGUFReader(path)

    t.check(dump["version"] == 3, f"{tag} version {dump['version']}")
    t.check(dump["alignment"] == (alignment or 32), f"{tag} alignment {dump['alignment']}")
    t.check(dump["data_offset"] == reader.data_offset, f"{tag} data_offset {dump['data_offset']} vs {reader.data_offset}")
    t.check(dump["file_size"] == os.path.getsize(path), f"{tag} file_size")

    ours = {kv["key"]: from_dump(kv["type"], kv["value"]) for kv in dump["kv"]}
    theirs = [k for k in reader.fields if not k.startswith("GGUF.")]
    t.check([kv["key"] for kv in dump["kv"]] == theirs, f"{tag} key list/order vs GGUFReader")
    for key in theirs:
        field = reader.fields[key]
        want, _ = rebuild(field.parts, 3, field.types[0])
        got_type, got = ours.get(key, (None, None))
        t.check(got_type == field.types[0], f"{tag} {key} type {got_type} vs GGUFReader {field.types[0]}")
        t.check(got_type is not None and same_value(field.types[0], got, want),
                f"{tag} {key} value {got!r} vs GGUFReader {want!r}")
    for key, vtype, value in writer_kvs():
        got_type, got = ours.get(key, (None, None))
        t.check(got_type == vtype and same_value(vtype, got, value), f"{tag} {key} vs written: {got!r}")
    t.check(ours.get("general.architecture") == (VT.STRING, "crosscheck"), f"{tag} general.architecture")

    by_name = {x.name: x for x in reader.tensors}
    t.check([d["name"] for d in dump["tensors"]] == list(tensors), f"{tag} tensor names/order")
    for d in dump["tensors"]:
        name = d["name"]
        if not t.check(name in tensors and name in by_name, f"{tag} unexpected tensor {name}"):
            continue
        qtype, ne, arr = tensors[name]
        x = by_name[name]
        payload = arr.tobytes()
        t.check(d["type"] == qtype.name and d["type_id"] == int(qtype), f"{tag} {name} type {d['type']}")
        t.check(d["ne"] == ne and d["ne"] == [int(v) for v in x.shape], f"{tag} {name} ne {d['ne']} want {ne}")
        t.check(d["n_bytes"] == len(payload) == int(x.n_bytes), f"{tag} {name} n_bytes {d['n_bytes']}")
        t.check(d["offset"] == x.data_offset - reader.data_offset, f"{tag} {name} offset {d['offset']}")
        t.check(d["offset"] % (alignment or 32) == 0, f"{tag} {name} offset alignment")
        t.check(d["fnv1a64"] == fnv1a64(payload) == fnv1a64(x.data.tobytes()), f"{tag} {name} payload hash")


def main():
    if len(sys.argv) != 2:
        print("usage: gguf_crosscheck.py /path/to/gguf_tool", file=sys.stderr)
        return 2
    tool = os.path.abspath(sys.argv[1])
    t = Tally()
    with tempfile.TemporaryDirectory(prefix="gguf_crosscheck.") as tmp:
        for step in (lambda: part1(t, tool, tmp), lambda: part2(t, tool, tmp, None),
                     lambda: part2(t, tool, tmp, 64)):
            try:
                step()
            except Exception as e:  # a crash in one part is one failure, not a lost summary
                t.check(False, f"exception: {type(e).__name__}: {e}")
    print(f"{t.passed} passed, {t.failed} failed")
    return 0 if t.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
