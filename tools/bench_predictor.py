#!/usr/bin/env python3
"""The routing predictor measured: how often each kind guesses right, and what prefetching its
guesses buys at each expert-cache budget.

    .venv/bin/python tools/bench_predictor.py --moeserve build-release/cli/moeserve \\
        --model tests/data/trained-moe.gguf --text FILE [--threads 2] [--prompt 512] [--gen 256] \\
        [--budgets 50%,25%,min] [--plot docs/predictor.png]

Runs `moeserve bench --text FILE` (the prompt and the decoded tokens are the file's text, so the
routing is the routing of real text; decode is teacher-forced) and reads its table:

1. Accuracy: pregate, affinity and hybrid at width top-k and 2 x top-k, each guessed one and two
   layers ahead (one run with --lookahead 2 scores both depths): recall and precision over the
   decode steps (batch 1: per token).
3. Eviction policies (lru, lfu, lru-protect, lfu-history, lru-predict) and prefetch thresholds
   replayed offline (`moeserve cache-replay`) on one trace of the same text, recorded with the
   --prefetcher's guesses at width 2 x top-k (so that the thresholds have unlikely guesses to drop).
2. Cost: decode with the expert cache at each budget, predictor off and on (--prefetcher,
   default pregate, the auto prefetch threshold), for the host tier (O_DIRECT reads from the file, after dropping the
   page cache's copy is not needed: O_DIRECT bypasses it) and for a `sim` device tier in front of
   a host tier holding every expert (misses copied over the simulated link): tokens/s, stall per
   token, bytes read (or copied) per token, prefetches used / issued.

With --plot, draws recall by kind and depth and stall per token by budget into an SVG and, when
Debian's chromium is installed, renders it to PNG (headless screenshot).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile


def bench(args, *extra) -> str:
    cmd = [args.moeserve, "bench", "--model", args.model, "--threads", str(args.threads), "--prompt",
           str(args.prompt), "--gen", str(args.gen), "--text", args.text, *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return r.stdout


def cells(out: str, first: str) -> list[str]:
    for line in out.splitlines():
        c = [x.strip() for x in line.strip().strip("|").split("|")]
        if c and c[0] == first:
            return c
    return []


def pct(text: str, word: str) -> float:
    m = re.search(word + r" ([0-9.]+)%", text)
    return float(m.group(1)) if m else float("nan")


def model_row(out: str) -> dict:
    lines = [ln for ln in out.splitlines() if ln.startswith("| ") and ".gguf" in ln]
    c = [x.strip() for x in lines[0].strip().strip("|").split("|")]
    return dict(decode=float(c[6]))


def cache_row(out: str) -> dict:
    c = " | ".join(cells(out, "expert cache"))
    num = lambda pat: float(re.search(pat, c).group(1))  # noqa: E731
    used, issued = (0, 0)
    m = re.search(r"prefetched (\d+), used (\d+)", c)
    if m:
        issued, used = int(m.group(1)), int(m.group(2))
    return dict(hit=num(r"decode hit rate ([0-9.]+)%"), mib=num(r"read ([0-9.]+) MiB/step"),
                stall=num(r"stall ([0-9.]+) ms/step"), issued=issued, used=used)


def k_of(args) -> int:
    out = subprocess.run([args.moeserve, "inspect", args.model], capture_output=True, text=True).stdout
    m = re.search(r"top-(\d+)", out) or re.search(r"expert_used_count\D+(\d+)", out)
    if not m:
        raise SystemExit("cannot read the model's top-k from `moeserve inspect`")
    return int(m.group(1))


def svg_plot(acc: list, cost: list, title: str) -> str:
    W, H = 900, 380
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
             f'font-size="12"><rect width="{W}" height="{H}" fill="white"/>'
             f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">{title}</text>']
    # left: recall bars, kind x depth x width
    x0, y0, pw, ph = 50, 50, 380, 260
    parts.append(f'<text x="{x0}" y="{y0 - 10}">recall (decode, per token)</text>')
    for v in range(0, 101, 20):
        y = y0 + ph - ph * v / 100
        parts.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{y}" y2="{y}" stroke="#ddd"/>'
                     f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end">{v}%</text>')
    colors = {"k": "#1f77b4", "2k": "#ff7f0e"}
    n = len(acc)
    bw = pw / max(1, n) / 2.6
    for i, a in enumerate(acc):
        cx = x0 + pw * (i + 0.5) / n
        for j, w in enumerate(("k", "2k")):
            v = a[f"recall_{w}"]
            h = ph * v / 100
            parts.append(f'<rect x="{cx - bw + j * bw:.1f}" y="{y0 + ph - h:.1f}" width="{bw * 0.95:.1f}" '
                         f'height="{h:.1f}" fill="{colors[w]}"/>')
        parts.append(f'<text x="{cx:.1f}" y="{y0 + ph + 14}" text-anchor="middle" font-size="10">{a["kind"]}</text>'
                     f'<text x="{cx:.1f}" y="{y0 + ph + 26}" text-anchor="middle" font-size="10">+{a["depth"]}</text>')
    parts.append(f'<rect x="{x0 + pw - 120}" y="{y0 + 4}" width="10" height="10" fill="{colors["k"]}"/>'
                 f'<text x="{x0 + pw - 105}" y="{y0 + 13}">width top-k</text>'
                 f'<rect x="{x0 + pw - 120}" y="{y0 + 20}" width="10" height="10" fill="{colors["2k"]}"/>'
                 f'<text x="{x0 + pw - 105}" y="{y0 + 29}">width 2 x top-k</text>')
    # right: stall per token, off vs on, per tier and budget
    x1 = 510
    parts.append(f'<text x="{x1}" y="{y0 - 10}">stall per token (ms): predictor off / on</text>')
    top = max([max(c["off"]["stall"], c["on"]["stall"]) for c in cost] + [0.001])
    n = len(cost)
    for v in (0, top / 2, top):
        y = y0 + ph - ph * v / top
        parts.append(f'<line x1="{x1}" x2="{x1 + pw - 20}" y1="{y}" y2="{y}" stroke="#ddd"/>'
                     f'<text x="{x1 - 6}" y="{y + 4}" text-anchor="end">{v:.2g}</text>')
    bw = (pw - 20) / max(1, n) / 2.6
    for i, c in enumerate(cost):
        cx = x1 + (pw - 20) * (i + 0.5) / n
        for j, key, col in ((0, "off", "#999"), (1, "on", "#2ca02c")):
            h = ph * c[key]["stall"] / top
            parts.append(f'<rect x="{cx - bw + j * bw:.1f}" y="{y0 + ph - h:.1f}" width="{bw * 0.95:.1f}" '
                         f'height="{h:.1f}" fill="{col}"/>')
        parts.append(f'<text x="{cx:.1f}" y="{y0 + ph + 14}" text-anchor="middle" font-size="10">{c["tier"]}</text>'
                     f'<text x="{cx:.1f}" y="{y0 + ph + 26}" text-anchor="middle" font-size="10">{c["budget"]}</text>')
    parts.append("</svg>\n")
    return "".join(parts)


def render_png(svg: str, png: str, w: int = 900, h: int = 380) -> bool:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        return False
    with tempfile.TemporaryDirectory() as d:
        page = os.path.join(d, "plot.html")
        with open(page, "w") as f:
            f.write(f"<html><body style='margin:0'>{svg}</body></html>")
        r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={w},{h}",
                            f"--screenshot={os.path.abspath(png)}", "file://" + page],
                           capture_output=True, text=True, timeout=120)
        return r.returncode == 0 and os.path.exists(png)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True, help="a text file the model's kind of text (held out)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--gen", type=int, default=256)
    ap.add_argument("--budgets", default="50%,25%,min")
    ap.add_argument("--kinds", default="pregate,affinity,hybrid")
    ap.add_argument("--plot", help="PNG (and .svg next to it) of recall and stall")
    ap.add_argument("--prefetcher", default="pregate", help="the predictor of the cost runs and the trace")
    args = ap.parse_args()

    k = k_of(args)
    print(f"model {os.path.basename(args.model)}, top-{k}, {args.prompt}-token prompt, {args.gen} "
          f"teacher-forced decode steps of {os.path.basename(args.text)}, {args.threads} threads\n")
    acc = []
    print("| predictor | layers ahead | recall@k | precision@k | recall@2k | precision@2k |\n"
          "|---|---|---|---|---|---|")
    for kind in args.kinds.split(","):
        res = {}
        for w, width in (("k", k), ("2k", 2 * k)):
            out = bench(args, "--predictor", kind, "--lookahead", "2", "--width", str(width))
            d1 = " | ".join(cells(out, "predictor"))
            d2 = " | ".join(cells(out, "predictor 2 layers ahead"))
            res[(1, w)] = (pct(d1, "recall"), pct(d1, "precision"))
            res[(2, w)] = (pct(d2, "recall"), pct(d2, "precision"))
        for depth in (1, 2):
            a = dict(kind=kind, depth=depth, recall_k=res[(depth, "k")][0], prec_k=res[(depth, "k")][1],
                     recall_2k=res[(depth, "2k")][0], prec_2k=res[(depth, "2k")][1])
            acc.append(a)
            print(f"| {kind} | {depth} | {a['recall_k']:.1f}% | {a['prec_k']:.1f}% | {a['recall_2k']:.1f}% | "
                  f"{a['prec_2k']:.1f}% |", flush=True)

    cost = []
    print("\n| tier | budget | predictor | decode tok/s | hit rate | stall ms/token | MiB read/token | "
          "prefetches used / issued |\n|---|---|---|---|---|---|---|---|")
    all_out = bench(args, "--expert-cache", "all")
    print(f"| host | all | off | {model_row(all_out)['decode']:.1f} | 100% | 0 | 0 | |")
    on_all = bench(args, "--expert-cache", "all", "--predictor", args.prefetcher)
    print(f"| host | all | {args.prefetcher} | {model_row(on_all)['decode']:.1f} | 100% | 0 | 0 | |")
    for tier in ("host", "sim"):
        for budget in args.budgets.split(","):
            row = dict(tier=tier, budget=budget)
            for key, pred in (("off", []), ("on", ["--predictor", args.prefetcher])):
                extra = (["--expert-cache", budget, "--direct", "on"] if tier == "host" else
                         ["--backend", "sim", "--expert-cache", "all", "--device-cache", budget,
                          "--miss-policy", "copy"])
                out = bench(args, *extra, *pred)
                c, mrow = cache_row(out), model_row(out)
                row[key] = dict(**c, **mrow)
                print(f"| {tier} | {budget} | {args.prefetcher if pred else 'off'} | {mrow['decode']:.1f} | "
                      f"{c['hit']:.1f}% | {c['stall']:.2f} | {c['mib']:.2f} | "
                      f"{c['used']} / {c['issued']} |", flush=True)
            cost.append(row)
    # 3. Policies and thresholds on one recorded trace of this text (requests and predictions)
    with tempfile.TemporaryDirectory() as d:
        trace = os.path.join(d, "trace.txt")
        bench(args, "--expert-cache", "all", "--trace", trace, "--predictor", args.prefetcher,
              "--width", str(2 * k))
        r = subprocess.run([args.moeserve, "cache-replay", trace, "--min-prob", "off,0.1,0.3,0.5,0.7"],
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"cache-replay failed:\n{r.stderr}")
        print(f"\nEviction policies and prefetch thresholds replayed on the trace of this run "
              f"({args.prefetcher}, one layer ahead, width 2 x top-k):\n")
        print(r.stdout)
    if args.plot:
        svg = svg_plot(acc, cost, f"{os.path.basename(args.model)}: routing predictor")
        svg_path = os.path.splitext(args.plot)[0] + ".svg"
        with open(svg_path, "w") as f:
            f.write(svg)
        print(f"\nplot: {svg_path}" + (f", {args.plot}" if render_png(svg, args.plot) else " (no chromium: no PNG)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
