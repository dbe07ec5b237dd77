#!/usr/bin/env python3
"""Grows a GGUF model to more layers by repeating its layers: layer i of the output is a copy of
layer i mod n of the input.  For benchmarks that need a model larger than RAM (the expert cache
out of core) without generating tens of gigabytes of random weights: the bytes are streamed
from the input's mapping, so it runs at disk speed.  Results of such a model are meaningless;
its size, shapes and access pattern are what matter.

    grow_model.py IN.gguf --layers N -o OUT.gguf
"""
import argparse
import re
import sys

import gguf


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input")
    ap.add_argument("--layers", type=int, required=True)
    ap.add_argument("-o", "--output", required=True)
    args = ap.parse_args()

    r = gguf.GGUFReader(args.input)
    arch = r.fields[gguf.Keys.General.ARCHITECTURE].contents()
    n_src = int(r.fields[f"{arch}.block_count"].contents())
    w = gguf.GGUFWriter(args.output, arch)
    for f in r.fields.values():
        if f.name == gguf.Keys.General.ARCHITECTURE or f.name.startswith("GGUF."):
            continue
        vt = f.types[0]
        sub = f.types[-1] if vt == gguf.GGUFValueType.ARRAY else None
        val = args.layers if f.name == f"{arch}.block_count" else f.contents()
        w.add_key_value(f.name, val, vt, sub_type=sub)

    pat = re.compile(r"blk\.(\d+)\.(.*)")
    head, tail, per_layer = [], [], {}
    seen_block = False
    for t in r.tensors:
        m = pat.match(t.name)
        if m:
            seen_block = True
            per_layer.setdefault(int(m.group(1)), []).append((m.group(2), t))
        else:
            (tail if seen_block else head).append(t)
    plan = [(t.name, t) for t in head]
    for i in range(args.layers):
        plan += [(f"blk.{i}.{rest}", t) for rest, t in per_layer[i % n_src]]
    plan += [(t.name, t) for t in tail]
    for name, t in plan:
        w.add_tensor_info(name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    total = sum(t.n_bytes for _, t in plan)
    done = shown = 0
    for _, t in plan:
        w.write_tensor_data(t.data, tensor_endianess=r.endianess)
        done += t.n_bytes
        if done - shown >= 2**30 or done == total:
            shown = done
            print(f"\r{done / 2**30:.1f} / {total / 2**30:.1f} GiB", end="", file=sys.stderr)
    print(file=sys.stderr)
    w.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
