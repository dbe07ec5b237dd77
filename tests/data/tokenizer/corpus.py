"""The tokenizer crosscheck corpus: hand-written cases plus seeded random strings.

corpus() returns a list of bytes (deterministic: fixed seeds, no dependence on the machine).
Most strings are valid UTF-8; the ones in INVALID are not and are checked for an exact round
trip only (no reference library takes invalid UTF-8 as text).

HAND and the word-level random strings came first; SPLITS and the character-level random
strings (MIXED) were added with the deepseek-v3 and kimi-k2 pre-tokenizers, whose regexes turn
on categories the others ignore (punctuation against symbols, marks, the Han script, letter
case, a CJK range that ends inside the ideograph block): they put the characters of each class
next to one another, so that each alternative of each regex decides some split.
"""
import random

HAND = [
    "", " ", "  ", "   ", "\t", "\n", "\n\n", "\n\n\n", " \n", "\n ", " \n \n", "\r\n", "\r\n\r\n",
    "\t\t\tx", "a  b", "a   b", "a\tb", "a\n\nb", "trailing space ", "trailing spaces   ",
    "   leading spaces", "\u00a0nbsp\u00a0", "\u3000ideographic space\u3000", "x\u2028y\u2029z",
    "Hello world", "Hello World!", "hello, world.", "The quick brown fox jumps over the lazy dog.",
    "I'm here, you're there, we've been, they'll go, he'd say, it's ok, don't",
    "I'M LOUD, YOU'RE LOUD, WE'VE, THEY'LL, HE'D, IT'S, DON'T", "'s 't 're 've 'm 'll 'd",
    "'S 'T 'RE 'VE 'M 'LL 'D", "rock 'n' roll", "''quoted''", "it\u2019s curly",
    "internationalization responsibility characteristics",
    "A mixture of experts model routes every token to a small number of expert networks.",
    "def softmax(x):\n    e = np.exp(x - x.max())\n    return e / e.sum()\n",
    "int main(int argc, char **argv) {\n\treturn argc > 1 ? 0 : 1;\n}\n",
    "for (int i = 0; i < n; i++) { sum += a[i] * b[i]; }",
    "<html><body class=\"x\">&amp; &lt;tag&gt;</body></html>", "SELECT * FROM t WHERE id = 42;",
    "{\"key\": [1, 2, 3], \"nested\": {\"a\": null}}", "x = y ** 2 // 3 % 4", "a->b, c::d, e=>f, g!=h",
    "   if x:\n        pass\n", "\t\tindent\n\t\t\tdeeper\n", "path/to/file.txt C:\\Windows\\system32",
    "https://example.com/a?b=c&d=e#f", "user@example.com", "#hashtag @mention $100 50% ^caret ~tilde",
    "0", "1", "12", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000", "-42", "+7",
    "2024-11-29", "10:30pm", "v1.2.3", "0x1F 0b1010 1e-5", "\u0663\u0664\u0665 arabic-indic",
    "\u2460\u2461\u2462 circled", "\u00bd \u00bc fractions", "\u00b2\u00b3 superscripts",
    "\uff11\uff12\uff13 fullwidth", "\u216b roman", "8\u00bd", "\u0967\u0968\u0969 devanagari digits",
    "\u4f60\u597d\uff0c\u4e16\u754c\uff01", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002",
    "\ud55c\uad6d\uc5b4 \ubb38\uc7a5\uc785\ub2c8\ub2e4.", "\u4e2d\u6587English\u6df7\u5408123",
    "\u3053\u3093\u306b\u3061\u306f\u3001\u4e16\u754c", "\u6f22\u5b57\u4eee\u540d\u4ea4\u3058\u308a",
    "\U0001f44d", "\U0001f600\U0001f601\U0001f602", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\U0001f1eb\U0001f1f7 flag", "\u2764\ufe0f heart", "emoji\U0001f680in\U0001f30dtext",
    "\U0001f44b\U0001f3fd wave", "\U0001f9d1\u200d\U0001f4bb", "\u263a \u2603 \u2708",
    "e\u0301", "cafe\u0301", "a\u0308\u0304", "n\u0303o", "\u0915\u094d\u0937", "\u0928\u092e\u0938\u094d\u0924\u0947",
    "\u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35", "\u05e9\u05b8\u05c1\u05dc\u05d5\u05b9\u05dd", "\u0645\u0631\u062d\u0628\u0627",
    "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d\u034f\u0334\u0319a\u0364\u0350l\u0348g\u033co",
    "\u1e9b\u0323", "\u1100\u1161\u11a8", "\u1100\u1161 \uac00\u11a8", "a\u0307\u0323", "\u0958\u0929",
    "\u212b \u2126 \u212a", "q\u0307\u0323", "\u0041\u030a\u0301", "\u00c5\u0301\u0327", "\u0300a",
    "\u0f73 \u0f75 \u0f81", "\u1fee \u0385", "\ufb1d\u05b4", "\u2adc\u0338", "\uf900\uf9ff", "\u2126 \u212a \u00c5", "stra\u00dfe STRASSE", "\u0130stanbul \u0131", "\u03a3\u03c3\u03c2",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440!", "\u0393\u03b5\u03b9\u03ac \u03c3\u03bf\u03c5",
    "\u00e9t\u00e9 \u00e0 la plage", "\u00fcber m\u00e4\u00dfig", "\u0141\u00f3d\u017a", "\u0219i \u021b",
    "\u2581leading lower one eighth block", "\u2581\u2581", "a\u2581b",
    "<|im_start", "<|im_start|>", "<|im_start|>user\nhi<|im_end|>\n", "<|im_end|", "|im_end|>",
    "<|endoftext|>", "<|endoftext|", "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>",
    "<s>", "</s>", "<s >", "< s>", "<unk>", "<0x41>", "<0x0A>", "<<s>>", "[INST]", "[/INST]", "[INST ]",
    "<pad>", "<|padding|>", "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<|fim_prefix|>",
    "\x00", "\x01\x02\x03", "\x7f", "\x1b[31mred\x1b[0m", "\u200b zero width", "\ufeffBOM",
    "\ufffd replacement", "\U0010fffd private", "\ue000 pua", "\u0085 nel",
]

# One or more cases per alternative of the deepseek-v3 and kimi-k2 regexes (the comments name
# them), and the characters that sit at the edges of their classes.
SPLITS = [
    # deepseek-v3, [ASCII punctuation][A-Za-z]+ against the ' ?[\p{P}\p{S}]+' run and letters
    ".NET .net .Net", "x.y.z", "e.g. i.e.", "..abc", "'s's", "(abc)", "@user #tag $HOME",
    "__init__ a_b_c", ".\u00e9t\u00e9 '\u00e9 .e\u00e9", "#\u03b1\u03b2 -\u0434\u0430", "[a]{b}<c>", "~/.bashrc",
    # the optional prefix of the letter run: a mark, a control or format character, white space
    "\u0301abc", "\x01abc", "\u200babc", "\u200b\u200b", "\tword", "\u3000word", "\u00a0word",
    " \u0301", "\u2028word", "\x7fdel", "\u00adsoft", "x\u200by", "a\u0301\u0302b", "\u0301\u0301",
    "abc\u200b word\x01 d\u00e9j\u00e0\u200b\u200b x\u00ad", "first\nsecond\nthird\r\nfourth\rfifth",
    "\u0915\u093f\u0928\u094d", "\u0e01\u0e34\u0e19",
    # punctuation and symbol runs, with and without a space and line breaks after them
    " !!", "!!\n\n", " ...\r\n", "\u00bfqu\u00e9?", "\u201cquoted\u201d", "\u00a9\u00ae\u2122 \u00b0C",
    "+-*/=", "a+b", "x\uff01\uff1f\n", "\u2190\u2192 \u2200x", " \u00a7\n\r", "-- //\n", "a/b/c/\n",
    "a.\n/b end;\n//comment\n/* x */\n/", "x = 1;\n/ y",
    # digits: ASCII and others, in runs longer than three, against letters
    "12345678", "\u0661\u0662\u0663\u0664\u0665", "\u00b2\u00b3\u00b9", "\u2160\u2161\u2162\u2163",
    "abc123def", "1a2b3c", "x\u00bd\u00bc", "\u2460\u2461\u2462\u2463", "v2.0.1-rc3", "\uff11\uff12\uff13\uff14",
    # CJK: deepseek-v3's range ends at U+9FA5 and holds all of Hiragana and Katakana
    "\u4e00\u9fa5\u9fa6\u9fa7\u9fbb", "\u3400\u3401 ext-a", "\u3041\u3042\u30a1\u30fc\u30fb",
    "\u309b\u309c\u30a0", "\u6f22\u5b57abc", "abc\u6f22\u5b57", "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\uff76\uff9e\uff71", "\u3131\u314f", "\u7b2c3\u7ae0", "\u4e2d\u6587,English.\u6df7\u5408",
    "\u9fa4\u9fa5\u9fa6 \u9fa5\u9fa6\u9fa5a \u9fa5.", "\u30b3\u30f3\u30d4\u30e5\u30fc\u30bf\u30fc\u30fb\u30b5\u30a4\u30a8\u30f3\u30b9",
    "\u30c7\u30fc\u30bf\u30fb\u30d9\u30fc\u30b9 a\u30fc b\u30fb c\u30fd\u30fe\u30ff",
    # the Han script (kimi-k2): radicals, iteration marks and numerals are Han but not letters
    "\u2e80\u2e81\u2f00\u2f01", "\u3005\u3007\u3021\u3029\u303b", "\u6642\u3005", "\u3007\u3007\u4e03",
    "\uf900\ufa0e", "\U00020000\U0002a6d6", "x\u3005y", " \u2e80x", "a\u2f00b", "\u3038\u3039 7",
    # letter case (kimi-k2): Lu, Lt, Ll, Lm and Lo, marks, contractions
    "HelloWorld camelCase snake_case SCREAMING_CASE XMLHttpRequest iPhone McDonald's",
    "\u01c5ungla \u01c7 \u01c8 \u01c9", "\u02b0\u02b2x", "ABC'S ABC's abc'S", "DON'T Hello's",
    "they'RE I'm'm x'd' o'clock rock'n'roll", "x'\u017f it'\u017fa '\u017f word'\u017f'\u017f 1'\u017f", "\u00c9COLE \u00e9cole \u00c9cole", "\u0391\u03b2\u0393\u03b4",
    "A\u0301B\u0301c", "\u05d0\u05b8b", "\u16a0\u16a1", "X\u02b0Y\u02b0z",
    # white space: runs before letters, before other characters, before line breaks, at the end
    "a \n b", "  \n\n  x", "\t\t\n", " \r\n\r\n ", "x   \u200b", "a\u0085b", "a\u2028\u2029b",
    "  \u200b", "end  ", "\u3000\u3000x", "x \t\u00a0y", "a\n\n\u00a0\u00a0b", " \x01", "a  \x01",
]

INVALID = [
    b"\xff", b"\xfe\xff", b"abc\x80def", b"\xe2\x82", b"\xe2\x82 x", b"\xc0\xaf", b"\xed\xa0\x80",
    b"\xf4\x90\x80\x80", b"\xf0\x9f\x98", b"ok \xf0\x9f\x98\x80 \x80\x80 end", b"\xc3", b"\xc3(",
    b" \xa0\xa1", b"\xf8\x88\x80\x80\x80", b"x\xe0\x80\x80y", b"\xe0\xa0", b"<|im_start|\xff>",
]

WORDS = ("the of and to in is it you that he was for on are with as I his they be at one have this "
         "from or had by word but what some we can out other were all there when up use your how said "
         "an each she which do their time if will way about many then them write would like so these "
         "her long make thing see him two has look more day could go come did number sound no most "
         "people my over know water than call first who may down side been now find tokenizer expert "
         "router Mixture-of-Experts GGUF llama qwen olmoe deepseek mistral").split()
PUNCT = list(".,;:!?()[]{}<>\"'`~@#$%^&*-_=+/\\|") + ["...", "--", "->", "=>", "::", "!=", "'s", "'ll", "n't"]
SPACES = [" ", "  ", "   ", "\t", "\n", "\n\n", " \n", "\r\n", "    ", "\u00a0", "\u3000"]
# code point ranges of long-assigned scripts (no recent additions, so every Unicode version
# used by the references agrees on their categories)
BLOCKS = [(0x20, 0x7e), (0xa1, 0xff), (0x100, 0x17f), (0x391, 0x3c9), (0x410, 0x44f), (0x5d0, 0x5ea),
          (0x627, 0x64a), (0x905, 0x939), (0xe01, 0xe30), (0x3041, 0x3093), (0x30a1, 0x30f6),
          (0x4e00, 0x9fa5), (0xac00, 0xd7a3), (0x2000, 0x206f), (0x2190, 0x21ff), (0x2200, 0x22ff),
          (0xff01, 0xff5e), (0x1f600, 0x1f64f), (0x1f300, 0x1f5ff), (0x300, 0x36f), (0x660, 0x669)]


def _random_string(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(1, 12)):
        kind = rng.random()
        if kind < 0.35:
            w = rng.choice(WORDS)
            r = rng.random()
            parts.append(w.upper() if r < 0.1 else w.capitalize() if r < 0.3 else w)
        elif kind < 0.5:
            parts.append(rng.choice(SPACES))
        elif kind < 0.6:
            parts.append(rng.choice(PUNCT))
        elif kind < 0.7:
            parts.append(str(rng.randint(0, 10 ** rng.randint(1, 9))))
        else:
            lo, hi = rng.choice(BLOCKS)
            parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6))))
        if rng.random() < 0.5:
            parts.append(" ")
    return "".join(parts)


# Character classes for MIXED, each a list of (first, last) code point ranges; all long assigned
# (Unicode 6.0 or before), so that the references' Unicode versions agree on them.
MIXED_CLASSES = [
    [(0x41, 0x5a)], [(0x61, 0x7a)], [(0x30, 0x39)],
    [(0x21, 0x2f), (0x3a, 0x40), (0x5b, 0x60), (0x7b, 0x7e)],        # ASCII punctuation, symbols
    [(0x20, 0x20)], [(0x20, 0x20)], [(0x09, 0x0a), (0x0d, 0x0d)], [(0xa0, 0xa0), (0x3000, 0x3000), (0x2028, 0x2029), (0x85, 0x85)],
    [(0x300, 0x36f), (0x93f, 0x94d)],                                  # marks
    [(0xc0, 0xd6), (0xd8, 0xf6), (0x391, 0x3a9), (0x3b1, 0x3c9), (0x410, 0x44f), (0x1c4, 0x1cc)],
    [(0x2b0, 0x2c1), (0x5d0, 0x5ea), (0x627, 0x64a), (0xe01, 0xe30)],  # Lm, Lo
    [(0x4e00, 0x4e80), (0x9f90, 0x9fbb)],                              # ideographs, either side of U+9FA5
    [(0x3400, 0x3420), (0xf900, 0xf910), (0x20000, 0x20010)],          # Han outside deepseek-v3's range
    [(0x2e80, 0x2e99), (0x2f00, 0x2f10), (0x3005, 0x3007), (0x3021, 0x3029)],  # Han, not letters
    [(0x3041, 0x3096), (0x3099, 0x30ff)],                              # kana, marks and ・ ー
    [(0xac00, 0xac40), (0x3131, 0x3163)],                              # Hangul
    [(0x660, 0x669), (0xb2, 0xb3), (0xbc, 0xbe), (0x2160, 0x216b), (0x2460, 0x2473), (0xff10, 0xff19)],
    [(0xa1, 0xbf), (0x2010, 0x2027), (0x2190, 0x21ff), (0x3001, 0x3003), (0xff01, 0xff0f), (0x20a0, 0x20b5)],
    [(0x1, 0x8), (0x200b, 0x200f), (0xad, 0xad), (0xfeff, 0xfeff)],     # control and format
    [(0x1f600, 0x1f64f)],
]
QUOTES = ["'s", "'S", "'re", "'RE", "'ll", "'d", "'m", "'t", "'ve", "'x"]


def _mixed_string(rng: random.Random) -> str:
    """A short string of characters drawn class by class, with runs, so that every pair of
    classes meets somewhere in the corpus."""
    out = []
    for _ in range(rng.randint(2, 10)):
        if rng.random() < 0.08:
            out.append(rng.choice(QUOTES))
            continue
        lo, hi = rng.choice(rng.choice(MIXED_CLASSES))
        out.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.choice((1, 1, 2, 3, 5)))))
    return "".join(out)


def corpus(n_random: int = 1000, seed: int = 20261129, n_mixed: int = 600) -> list:
    rng = random.Random(seed)
    out = [s.encode("utf-8") for s in HAND]
    out += [_random_string(rng).encode("utf-8") for _ in range(n_random)]
    out += [s.encode("utf-8") for s in SPLITS]
    mixed = random.Random(seed + 1)
    out += [_mixed_string(mixed).encode("utf-8") for _ in range(n_mixed)]
    out += INVALID
    return out


def is_valid(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
