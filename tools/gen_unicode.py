#!/usr/bin/env python3
"""Generates tokenizer/unicode_data.c: per-code-point category flags for the tokenizer's
pre-tokenizers (letters, numbers, white space, punctuation, symbols, marks) and the tables of
Unicode normalisation form C (canonical combining classes, canonical decompositions, the pairs
that compose).

Reads the Unicode Character Database as Debian's `unicode-data` package installs it
(/usr/share/unicode/UnicodeData.txt, PropList.txt, Scripts.txt, DerivedNormalizationProps.txt).
The output is committed so that a build needs neither the package nor Python:

    python3 tools/gen_unicode.py [UCD_DIR] > tokenizer/unicode_data.c

Layout: a two-stage table.  stage1[cp >> 8] names a 256-entry block in stage2; identical
blocks are stored once, so the whole of U+0000..U+10FFFF fits in a few tens of kilobytes.
"""
import array
import sys

UCD = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode"
N_CP = 0x110000

# Flag bits; keep in sync with TOK_UC_* in tokenizer/tokenizer_internal.h.
FLAGS = {"L": 0x01, "N": 0x02, "P": 0x08, "S": 0x10, "M": 0x20, "C": 0x40}
WHITE = 0x04
# letter case (o200k's classes [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}])
CASE = {"Lu": 0x80, "Lt": 0x80, "Ll": 0x100}
# the Han script, \p{Han} (Kimi-K2's pre-tokenizer): a script, not a category, from Scripts.txt
HAN = 0x200


def read_categories():
    cat = array.array("H", bytes(2 * N_CP))
    first = None
    with open(f"{UCD}/UnicodeData.txt", encoding="utf-8") as f:
        for line in f:
            fields = line.split(";")
            cp = int(fields[0], 16)
            name, gc = fields[1], fields[2]
            flag = FLAGS.get(gc[0], 0) | CASE.get(gc, 0)
            if name.endswith(", First>"):
                first = cp
                continue
            if name.endswith(", Last>"):
                for c in range(first, cp + 1):
                    cat[c] = flag
                first = None
                continue
            cat[cp] = flag
    return cat


def read_white_space(cat):
    with open(f"{UCD}/PropList.txt", encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if not line:
                continue
            rng, prop = (s.strip() for s in line.split(";"))
            if prop != "White_Space":
                continue
            lo, _, hi = rng.partition("..")
            for c in range(int(lo, 16), int(hi or lo, 16) + 1):
                cat[c] |= WHITE


def read_han(cat):
    with open(f"{UCD}/Scripts.txt", encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if not line:
                continue
            rng, script = (x.strip() for x in line.split(";"))
            if script != "Han":
                continue
            lo, _, hi = rng.partition("..")
            for c in range(int(lo, 16), int(hi or lo, 16) + 1):
                cat[c] |= HAN


def read_normalization():
    """(ccc, decompositions, compositions): canonical combining classes (non-zero only),
    canonical decompositions (one or two code points) and the pairs that NFC composes."""
    ccc, decomp = {}, {}
    first = None
    with open(f"{UCD}/UnicodeData.txt", encoding="utf-8") as f:
        for line in f:
            fields = line.split(";")
            cp = int(fields[0], 16)
            if fields[1].endswith(", First>"):
                first = cp
                continue
            lo = first if fields[1].endswith(", Last>") else cp
            first = None
            if int(fields[3]):
                for c in range(lo, cp + 1):
                    ccc[c] = int(fields[3])
            d = fields[5]
            if d and not d.startswith("<"):
                decomp[cp] = [int(x, 16) for x in d.split()]
    excluded = set()
    with open(f"{UCD}/DerivedNormalizationProps.txt", encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if not line:
                continue
            parts = [x.strip() for x in line.split(";")]
            if parts[1] != "Full_Composition_Exclusion":
                continue
            lo, _, hi = parts[0].partition("..")
            excluded.update(range(int(lo, 16), int(hi or lo, 16) + 1))
    comp = {}
    for cp, d in decomp.items():
        if len(d) == 2 and cp not in excluded:
            comp[(d[0], d[1])] = cp
    return ccc, decomp, comp


def write_normalization(out):
    ccc, decomp, comp = read_normalization()
    out.write(f"\nstatic const uint32_t ccc_table[{len(ccc)}][2] = {{ /* code point, class */\n")
    items = sorted(ccc.items())
    for i in range(0, len(items), 6):
        out.write("    " + " ".join(f"{{0x{c:x}, {v}}}," for c, v in items[i:i + 6]) + "\n")
    out.write("};\n\n")
    out.write(f"static const uint32_t decomp_table[{len(decomp)}][3] = {{ /* code point, first, second (0 = none) */\n")
    items = sorted(decomp.items())
    for i in range(0, len(items), 4):
        out.write("    " + " ".join(f"{{0x{c:x}, 0x{d[0]:x}, 0x{(d[1] if len(d) > 1 else 0):x}}},"
                                    for c, d in items[i:i + 4]) + "\n")
    out.write("};\n\n")
    out.write(f"static const uint32_t comp_table[{len(comp)}][3] = {{ /* first, second, composite */\n")
    items = sorted(comp.items())
    for i in range(0, len(items), 4):
        out.write("    " + " ".join(f"{{0x{a:x}, 0x{b:x}, 0x{c:x}}}," for (a, b), c in items[i:i + 4]) + "\n")
    out.write("};\n\n")
    out.write("""static int cmp_cp(const void *key, const void *elem)
{
    uint32_t k = *(const uint32_t *)key, e = *(const uint32_t *)elem;
    return k < e ? -1 : k > e;
}

static int cmp_pair(const void *key, const void *elem)
{
    const uint32_t *k = key, *e = elem;
    if (k[0] != e[0])
        return k[0] < e[0] ? -1 : 1;
    return k[1] < e[1] ? -1 : k[1] > e[1];
}

uint8_t tok__uc_ccc(uint32_t cp)
{
    const uint32_t *e = bsearch(&cp, ccc_table, sizeof ccc_table / sizeof ccc_table[0], sizeof ccc_table[0], cmp_cp);
    return e ? (uint8_t)e[1] : 0;
}

int tok__uc_decomp(uint32_t cp, uint32_t out[2])
{
    const uint32_t *e = bsearch(&cp, decomp_table, sizeof decomp_table / sizeof decomp_table[0], sizeof decomp_table[0],
                                cmp_cp);
    if (!e)
        return 0;
    out[0] = e[1];
    out[1] = e[2];
    return e[2] ? 2 : 1;
}

uint32_t tok__uc_compose(uint32_t a, uint32_t b)
{
    const uint32_t key[2] = {a, b};
    const uint32_t *e = bsearch(key, comp_table, sizeof comp_table / sizeof comp_table[0], sizeof comp_table[0], cmp_pair);
    return e ? e[2] : 0;
}
""")


def main():
    cat = read_categories()
    read_white_space(cat)
    read_han(cat)
    blocks, index, stage1 = [], {}, []
    for b in range(N_CP >> 8):
        blk = tuple(cat[b << 8:(b + 1) << 8])
        if blk not in index:
            index[blk] = len(blocks)
            blocks.append(blk)
        stage1.append(index[blk])
    out = sys.stdout
    out.write("/* Generated by tools/gen_unicode.py from the Unicode Character Database\n"
              " * (Debian package unicode-data: UnicodeData.txt, PropList.txt, Scripts.txt).\n"
              " * Do not edit. */\n"
              "/* clang-format off */\n")
    out.write('#include "tokenizer/tokenizer_internal.h"\n\n#include <stdlib.h>\n\n')
    out.write(f"static const uint16_t stage1[{len(stage1)}] = {{\n")
    for i in range(0, len(stage1), 16):
        out.write("    " + ", ".join(str(x) for x in stage1[i:i + 16]) + ",\n")
    out.write("};\n\n")
    out.write(f"static const uint16_t stage2[{len(blocks)}][256] = {{\n")
    for blk in blocks:
        out.write("    {\n")
        for i in range(0, 256, 32):
            out.write("        " + ",".join(str(x) for x in blk[i:i + 32]) + ",\n")
        out.write("    },\n")
    out.write("};\n\n")
    out.write("uint16_t tok__uc_flags(uint32_t cp)\n{\n"
              "    if (cp >= 0x110000u)\n        return 0;\n"
              "    return stage2[stage1[cp >> 8]][cp & 0xffu];\n}\n")
    write_normalization(out)


if __name__ == "__main__":
    main()
