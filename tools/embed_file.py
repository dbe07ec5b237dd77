#!/usr/bin/env python3
"""Writes a C file that defines a file's bytes as a NUL-terminated char array and its length, so
that the server can serve a page without reading files at run time.

    embed_file.py INPUT OUTPUT.c SYMBOL
"""
import sys

src, out, name = sys.argv[1:4]
data = open(src, "rb").read()
with open(out, "w") as f:
    f.write(f"/* generated from {src.split('/')[-1]} by tools/embed_file.py: do not edit */\n")
    f.write("#include <stddef.h>\n\n")
    f.write(f"const char {name}[] = {{\n")
    for i in range(0, len(data), 16):
        f.write("    " + ", ".join(str(b if b < 128 else b - 256) for b in data[i:i + 16]) + ",\n")
    f.write("    0};\n")
    f.write(f"const size_t {name}_len = {len(data)};\n")
