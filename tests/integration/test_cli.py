#!/usr/bin/env python3
"""The moeserve binary, run as a user runs it: inspect, generate and bench on generated models,
and the errors a user sees for a missing or damaged file.  Sizes are checked against gguf-py's
own reading of the same file.  Usage: test_cli.py /path/to/moeserve"""
import os
import re
import subprocess
import sys
import tempfile

import gguf

ROOT = os.environ.get("MOE_SOURCE_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MOESERVE = sys.argv[1]
passed = failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}")


def run(*args):
    p = subprocess.run([MOESERVE, *args], capture_output=True, timeout=300)
    # generated text from a random model need not be valid UTF-8
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


def gen(path, *args):
    subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_model.py"), *args, "--seed", "1", "-o", path],
                   check=True, capture_output=True)


with tempfile.TemporaryDirectory() as tmp:
    q4km = os.path.join(tmp, "q3.gguf")
    gen(q4km, "--arch", "qwen3moe", "--preset", "tiny", "--type", "q4_k_m")

    rc, out, err = run("inspect", "--summary", q4km)
    check(rc == 0, f"inspect exits 0 (got {rc}: {err})")
    check(re.search(r"architecture\s+qwen3moe", out) is not None, "inspect names the architecture")
    check(re.search(r"experts\s+8, top-4", out) is not None, "inspect shows experts and top-k")
    # gguf-py's view of the same file: bytes of all tensors and of the routed experts
    r = gguf.GGUFReader(q4km)
    total = sum(int(t.n_bytes) for t in r.tensors)
    # the largest layer's expert (layers may differ in type: Q4_K_M puts some ffn_down in Q6_K)
    layer_bytes = {}
    for t in r.tensors:
        if "_exps." in t.name:
            layer = int(t.name.split(".")[1])
            layer_bytes[layer] = layer_bytes.get(layer, 0) + int(t.n_bytes)
    per_expert = max(layer_bytes.values()) // 8
    m = re.search(r"routed experts\s+\S+ \S+ \((\d+) experts x ([0-9.]+) KiB", out)
    check(m is not None and int(m.group(1)) == 16, "inspect counts 16 experts (2 layers x 8)")
    if m:
        check(abs(float(m.group(2)) * 1024 - per_expert) < 10.24, f"bytes per expert {m.group(2)} KiB vs gguf-py {per_expert} B")
    down_types = {t.tensor_type.name for t in r.tensors if t.name.endswith("ffn_down_exps.weight")}
    m = re.search(r"ffn_down_exps\.weight\s+(\S+)", out)
    check(m is not None and set(m.group(1).split("+")) == down_types,
          f"role line for ffn_down_exps ({m and m.group(1)}) equals gguf-py's types {down_types}")
    m = re.search(r"type mix:\n((?:  .*\n)+)", out)
    mix = {}
    if m:
        for line in m.group(1).splitlines():
            name, count = line.split()[:2]
            mix[name] = int(count)
    want_mix = {}
    for t in r.tensors:
        want_mix[t.tensor_type.name] = want_mix.get(t.tensor_type.name, 0) + 1
    check(mix == want_mix, f"type mix {mix} equals gguf-py's {want_mix}")

    rc, out, err = run("inspect", q4km)
    check(rc == 0 and out.count("blk.") >= len([t for t in r.tensors if t.name.startswith("blk.")]),
          "inspect without --summary lists every tensor")

    rc, out, err = run("generate", "--model", q4km, "--prompt", "Hello world", "-n", "8", "--threads", "2",
                       "--ignore-eos")
    check(rc == 0, f"generate exits 0 ({err})")
    check(re.search(r"generation: 8 tokens in [0-9.]+ s \([0-9.]+ tokens/s\)", err) is not None,
          f"generate ends with a timing line ({err.strip()[-200:]})")
    check("running on the CPU backend" in err, "the log says which backend runs")
    greedy = out
    rc, out, err = run("generate", "--model", q4km, "--prompt", "Hello world", "-n", "8", "--threads", "1",
                       "--ignore-eos")
    check(rc == 0 and out == greedy, "greedy generation is the same on 1 and 2 threads")

    # A stop string cuts the text right before it, even when it spans tokens.
    text = greedy.rstrip("\n")
    windows = [text[i:i + 3] for i in range(len(text) // 2, len(text) - 2) if "\ufffd" not in text[i:i + 3]]
    check(len(windows) > 0, f"greedy output long enough to cut with a stop string ({text!r})")
    if windows:
        stop = windows[0]
        rc, out, err = run("generate", "--model", q4km, "--prompt", "Hello world", "-n", "8", "--ignore-eos",
                           "--stop", stop)
        check(rc == 0 and out.rstrip("\n") == text[:text.index(stop)] and "stopped by stop string" in err,
              f"stop string {stop!r}: {out!r} vs {text!r}")

    # Seeded sampling reproduces; another seed (almost surely) differs.
    outs = []
    for seed in ("7", "7", "8"):
        rc, out, err = run("generate", "--model", q4km, "--prompt", "Hello world", "-n", "16", "--ignore-eos",
                           "--temperature", "1.5", "--seed", seed)
        check(rc == 0, f"sampling with seed {seed} runs ({err.strip()[-200:]})")
        outs.append(out)
    check(outs[0] == outs[1], "the same seed gives the same text")
    check(outs[0] != outs[2], "another seed gives other text")

    rc, out, err = run("generate", "--model", q4km, "--chat", "--system", "Be brief.", "--prompt", "Hi", "-n", "4")
    check(rc == 0 and "chat template" in err, f"generate --chat renders the model's template ({err.strip()[-300:]})")
    rc, out, err = run("generate", "--model", q4km, "--chat", "--chat-template", "no-such-template", "--prompt", "Hi")
    check(rc == 1 and "no-such-template" in err and "chatml" in err,
          f"an unknown template name lists the built-in ones ({err.strip()[-300:]})")
    # Every architecture's template, tokenizer and forward pass through `generate --chat`, with
    # the expert cache at its minimum giving the same text as the mapped path.
    for arch, typ in (("llama", "q8_0"), ("qwen2moe", "q4_k_m"), ("olmoe", "q6_k"), ("qwen3moe", "f16"),
                      ("gpt-oss", "mxfp4"), ("glm4moe", "q4_k_m"), ("deepseek2", "q4_k_m")):
        path = os.path.join(tmp, f"{arch}.gguf")
        gen(path, "--arch", arch, "--preset", "tiny", "--type", typ)
        rc, out, err = run("generate", "--model", path, "--chat", "--prompt", "Hello there", "-n", "12",
                           "--ignore-eos")
        check(rc == 0 and "generation: 12 tokens" in err, f"generate --chat on {arch} {typ} ({err.strip()[-300:]})")
        rc2, out2, err2 = run("generate", "--model", path, "--chat", "--prompt", "Hello there", "-n", "12",
                              "--ignore-eos", "--expert-cache", "min", "--predictor", "pregate")
        check(rc2 == 0 and out2 == out, f"{arch}: the minimum expert cache gives the same text ({err2.strip()[-200:]})")
        if arch in ("glm4moe", "deepseek2"):   # a quarter of the keys, a third of them the dense layer's empty ones
            rc2, out2, err2 = run("generate", "--model", path, "--chat", "--prompt", "Hello there", "-n", "12",
                                  "--ignore-eos", "--expert-cache", "25%")
            check(rc2 == 0 and out2 == out, f"{arch}: --expert-cache 25% gives the same text ({err2.strip()[-200:]})")
        if arch == "deepseek2":   # the latent attention's shape, and what its cache saves
            rc2, out2, err2 = run("inspect", path)
            check(rc2 == 0 and "latent (MLA): KV rank" in out2 and "full K/V would take" in out2,
                  f"inspect shows deepseek2's latent attention and its KV saving ({out2[-800:]} {err2[-200:]})")
        # the GPU data path on the simulated device, its tier at a quarter of the experts
        rc3, out3, err3 = run("generate", "--model", path, "--chat", "--prompt", "Hello there", "-n", "12",
                              "--ignore-eos", "--backend", "sim", "--device-cache", "25%", "--expert-cache", "50%")
        check(rc3 == 0 and out3 == out and "sim backend" in err3 and "device tier" in err3,
              f"{arch}: --backend sim --device-cache 25% gives the CPU's text ({err3.strip()[-300:]})")
    rc, out, err = run("bench", "--model", q4km, "--backend", "sim", "--device-cache", "min", "--prompt", "8",
                       "--gen", "4", "--threads", "2")
    check(rc == 0 and "| sim backend |" in out and "| device tier, prefill |" in out
          and "| device tier, decode |" in out,
          f"bench --backend sim reports the link and the device tier ({out[-400:]} {err[-200:]})")
    # The best split's floor (every missed byte at the link's and the CPU's rates together, and at
    # least every byte at the device's) is never above the split's own floor or the step's.
    tier = re.search(r"\| device tier, decode \|.*misses' floor ([0-9.]+) ms/step \| best split's floor "
                     r"([0-9.]+) ms/step, achieved ([0-9.]+)", out)
    main = next((l for l in out.splitlines() if l.startswith("| q3.gguf |")), "")
    step_floor = float(main.split("|")[12]) if main.count("|") == 15 else None
    check(tier is not None and step_floor is not None
          and float(tier.group(2)) <= max(float(tier.group(1)), step_floor) + 0.011
          and float(tier.group(3)) > 0,
          f"bench: the best split's floor is at most the chosen split's and the step's ({out[-700:]})")
    # The device check's benchmark script on sim, the file named as one the issue has targets for:
    # every configuration runs, and every goal is measured from bench's rows (its verdicts are
    # the GPU's to give; here only that the parsing keeps up with bench's output).
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "bench_device.py"), "--moeserve", MOESERVE,
                        "--backend", "sim", "--threads", "2", "--prompt", "16", "--gen", "4", "--cpu-gen", "4",
                        "--cpu-threads", "1", "--model", f"mixtral4={q4km}"], capture_output=True, text=True, timeout=600)
    goal_rows = [l.split("|")[1:-1] for l in p.stdout.splitlines() if l.startswith("| mixtral4 |")]
    tally = re.search(r"^goals: (\d+) passed, (\d+) failed$", p.stdout, re.M)
    check(p.returncode == 0 and "bench failed" not in p.stdout and len(goal_rows) == 8
          and all(r[2].strip() not in ("-", "not measured") for r in goal_rows) and tally is not None
          and int(tally.group(1)) + int(tally.group(2)) == 6 and p.stdout.count("## mixtral4") == 13,
          f"tools/bench_device.py measures every goal from bench's rows ({p.stdout[-1500:]} {p.stderr[-300:]})")
    # What the device check's rows compare, on sim: with every expert on the device each decode step
    # routes there and repeats replay a graph; --host-routing and --no-graphs turn one each off;
    # --no-tensor-cores only changes CUDA's batch kernel (no "cuda matmul" row on sim).
    def routed(*extra):
        rc, out, err = run("bench", "--model", q4km, "--backend", "sim", "--device-cache", "all", "--prompt", "8",
                           "--gen", "6", "--threads", "2", *extra)
        m = re.search(r"experts routed on the device in (\d+) of (\d+) decode steps, (\d+) replayed", out)
        return (rc, tuple(int(g) for g in m.groups()) if m else None, "| cuda matmul |" in out,
                f"{out[-300:]} {err[-200:]}")
    rc, r, cuda_row, shown = routed()
    check(rc == 0 and r is not None and r[0] == r[1] == 6 and r[2] >= 3 and not cuda_row,
          f"bench on sim, every expert on the device: 6 of 6 steps routed there, graphs replayed ({shown})")
    rc, r, cuda_row, shown = routed("--host-routing")
    check(rc == 0 and r == (0, 6, 0), f"bench --host-routing: no step routed on the device, none replayed ({shown})")
    rc, r, cuda_row, shown = routed("--no-graphs")
    check(rc == 0 and r == (6, 6, 0), f"bench --no-graphs: routed on the device, no replay ({shown})")
    rc, r, cuda_row, shown = routed("--predictor", "pregate")
    check(rc == 0 and r is not None and r[0] == r[1] == 6 and r[2] >= 3 and "idle: every expert on the device" in shown,
          f"bench --predictor pregate, every expert on the device: the predictor idles, the steps still route "
          f"there and replay ({shown})")
    rc, r, cuda_row, shown = routed("--no-tensor-cores")
    check(rc == 0 and r is not None and r[0] == 6 and not cuda_row,
          f"bench --no-tensor-cores is accepted and changes nothing on sim ({shown})")
    rc, out, err = run("bench", "--model", q4km, "--backend", "cpu", "--prompt", "8", "--gen", "4", "--threads", "2",
                       "--profile")
    rows = {l.split("|")[1].strip(): l for l in out.splitlines() if l.startswith("| ") and l.count("|") == 5}
    check(rc == 0 and "matmul" in rows and "outside the operations" in rows and "router" in rows
          and "operation (prefill)" in rows and "operation (decode)" in rows,
          f"bench --profile tables the operations of the prefill and of a decode step ({out[:600]} {err[-200:]})")
    # On a device backend the same table (sim's arithmetic is the CPU's, so are its times), with
    # the steps routed on the device and graphs off while timing.
    rc, out, err = run("bench", "--model", q4km, "--backend", "sim", "--prompt", "8", "--gen", "4", "--threads",
                       "2", "--profile")
    rows = {l.split("|")[1].strip(): l.split("|")[2].strip() for l in out.splitlines()
            if l.startswith("| ") and l.count("|") == 5}
    sim_row = next((l for l in out.splitlines() if l.startswith("| sim backend")), "")
    check(rc == 0 and float(rows.get("moe_align", 0) or 0) >= 1 and float(rows.get("experts", 0) or 0) >= 1
          and "outside the operations" in rows and "in 4 of 4 decode steps, 0 replayed" in sim_row,
          f"bench --backend sim --profile times the routed steps' operations, no graph replayed ({out[:900]})")
    # The predictor on text: bench --text teacher-forces the file's tokens, --trace records the
    # requests and the predictions, and cache-replay compares policies and thresholds on them.
    text = os.path.join(tmp, "text.txt")
    with open(text, "w") as f:
        f.write("The router picks the experts of every token, layer after layer. " * 40)
    trace = os.path.join(tmp, "trace.txt")
    deep = os.path.join(tmp, "deep.gguf")  # four layers, so that two layers ahead exists
    gen(deep, "--arch", "qwen3moe", "--preset", "tiny", "--type", "q4_k_m", "--n-layer", "4")
    rc, out, err = run("bench", "--model", deep, "--threads", "2", "--prompt", "32", "--gen", "16", "--text", text,
                       "--expert-cache", "all", "--trace", trace, "--predictor", "hybrid", "--lookahead", "2",
                       "--width", "4")
    check(rc == 0 and "| predictor | hybrid, width 4 per token |" in out and "| predictor 2 layers ahead |" in out,
          f"bench --text --predictor hybrid --lookahead 2 scores both depths ({out[-600:]} {err[-300:]})")
    with open(trace) as f:
        lines = f.read().splitlines()
    check(lines[0].startswith("moeserve-trace 1 ") and any(l.startswith("p ") and "/" in l for l in lines),
          f"the trace holds the predictions ({lines[:3]})")
    rc, out, err = run("cache-replay", trace, "--slots", "4", "--min-prob", "off,0.2", "--policy", "lru-predict")
    rows = [l for l in out.splitlines() if l.startswith("| lru-predict |")]
    issued = [int(l.split("|")[8].split("/")[1]) for l in rows] if len(rows) == 2 else []
    check(rc == 0 and len(rows) == 2 and "| off |" in rows[0] and "p >= 0.20" in rows[1] and issued[0] == 0
          and issued[1] > 0, f"cache-replay replays the predictions at a threshold ({out} {err})")
    rc, out, err = run("cache-replay", trace, "--min-prob", "0.2,")
    check(rc == 2 and "--min-prob" in err, f"a malformed --min-prob is a usage error ({err.strip()})")
    rc, out, err = run("bench", "--model", q4km, "--prompt", "4000", "--gen", "4", "--text", text)
    check(rc == 1 and "tokens" in err and "needs" in err, f"bench --text too short for the run says so ({err.strip()})")

    rc, out, err = run("generate", "--model", q4km, "--prompt", "x", "--backend", "cuda")
    check(rc != 0 and "cuda" in err.lower(), f"--backend cuda without a device fails with the reason ({err.strip()[-200:]})")
    rc, out, err = run("generate", "--model", q4km, "--prompt", "x", "--backend", "tpu")
    check(rc == 2 and "--backend" in err, f"an unknown backend is a usage error ({err.strip()[-200:]})")

    rc, out, err = run("generate", "--model", q4km, "--prompt", "x", "--temperature", "3")
    check(rc == 1 and "temperature" in err, f"an out-of-range sampling parameter is named ({err.strip()})")

    rc, out, err = run("generate", "--model", q4km, "--prompt-ids", "1,2,999999")
    check(rc != 0 and "outside the vocabulary" in err, f"a token id outside the vocabulary is refused ({err.strip()})")

    rc, out, err = run("bench", "--model", q4km, "--threads", "1", "--prompt", "8", "--gen", "4")
    check(rc == 0 and re.search(r"\| q3\.gguf \| 1 \| 1 \| 8 \|", out) is not None, "bench prints its table row")

    missing = os.path.join(tmp, "nope.gguf")
    rc, out, err = run("inspect", missing)
    check(rc == 1 and "nope.gguf" in err and "No such file" in err, f"missing file: clear error ({err.strip()})")

    truncated = os.path.join(tmp, "cut.gguf")
    with open(q4km, "rb") as src, open(truncated, "wb") as dst:
        dst.write(src.read(os.path.getsize(q4km) // 2))
    rc, out, err = run("inspect", truncated)
    check(rc == 1 and "offset" in err and "cut.gguf" in err, f"truncated file: error with offset ({err.strip()})")
    rc, out, err = run("generate", "--model", truncated, "--prompt", "x")
    check(rc == 1 and "offset" in err, "generate refuses the truncated file too")

    rc, out, err = run("frobnicate")
    check(rc == 2 and "unknown command" in err, "unknown command: usage error")
    rc, out, err = run("bench", "--model", q4km, "--threads", "many")
    check(rc == 2 and "--threads" in err, "bad option value: names the option")

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
