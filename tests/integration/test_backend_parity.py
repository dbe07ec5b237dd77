#!/usr/bin/env python3
"""The forward pass on the sim backend, with its device tier in front of the host tier at every
budget, gives bit for bit the CPU backend's logits — on all seven architectures, float and
quantised (gpt-oss: F16 and its files' MXFP4 experts; glm4moe and deepseek2: the leading dense
layer's empty expert keys left out of every budget; deepseek2: its latent KV cache).  sim runs the CPU's kernels behind a separate device arena with checked pointers and
delayed copies, so equality here means every copy and wait of the GPU data path is in place.
With every expert in the device tier the layers route on the device (moe_align, experts_routed)
and must give the same bits as the host's routing.
Usage: test_backend_parity.py /path/to/backend_parity   (prints "N passed, N failed")"""
import os
import re
import subprocess
import sys

ROOT = os.environ.get("MOE_SOURCE_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get("MOE_BUILD_ROOT", ".")
TOOL = sys.argv[1]
passed = failed = 0


def model(arch, qtype):
    d = os.path.join(BUILD, "test-models")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"parity-{arch}-tiny-{qtype}.gguf")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}"
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_model.py"), "--arch", arch,
                        "--preset", "tiny", "--type", qtype, "--seed", "3", "-o", tmp],
                       check=True, capture_output=True)
        os.rename(tmp, path)
    return path


# the quantised type each family's files come in
QUANT = {"llama": "q4_k_m", "qwen2moe": "q4_k_m", "qwen3moe": "q4_k_m", "olmoe": "q4_k_m", "gpt-oss": "mxfp4",
         "glm4moe": "q4_k_m", "deepseek2": "q4_k_m"}
for arch in ("llama", "qwen2moe", "qwen3moe", "olmoe", "gpt-oss", "glm4moe", "deepseek2"):
    for qtype in ("f16", QUANT[arch]):
        p = subprocess.run([TOOL, "--model", model(arch, qtype), "--backend", "sim", "--exact", "--steps", "6",
                            "--host-budgets", "all,50%,25%,min", "--device-budgets", "all,50%,25%,min"],
                           capture_output=True, text=True, timeout=600)
        print(p.stdout, end="")
        m = re.search(r"^(\d+) passed, (\d+) failed$", p.stdout, re.M)
        # a device tier that holds every expert routes on the device (moe_align and
        # experts_routed, no host round trip per layer); any other budget through the host
        rows = [l.split("|") for l in p.stdout.splitlines() if l.startswith("| parity-")]
        routed_ok = len(rows) == 16 and all(r[9].strip() == ("7/7" if r[4].strip() == "all" else "0/7")
                                            for r in rows)
        if p.returncode != 0 or not m or int(m.group(1)) != 16 or not routed_ok:
            failed += 1
            print(f"FAIL: {arch} {qtype}: exit {p.returncode}, routed on the device as expected: {routed_ok}\n"
                  f"{p.stderr[-2000:]}")
        else:
            passed += int(m.group(1))
# A device tier's misses computed on the CPU (from the host tier) while the device computes the
# rest: the same bits again, and the CPU really computed some (gpt-oss: with the host's copy of
# the expert biases).  With a host tier that holds every expert, every one of them ran on the CPU
# lane, beside the device's work and copies (auto: split between the two, so both the CPU and
# the copies got some).
for arch in ("qwen2moe", "llama", "gpt-oss", "glm4moe", "deepseek2"):
    for policy in ("cpu", "auto"):
        p = subprocess.run([TOOL, "--model", model(arch, QUANT[arch]), "--backend", "sim", "--exact", "--steps", "6",
                            "--miss-policy", policy, "--host-budgets", "all,25%", "--device-budgets", "25%,min"],
                           capture_output=True, text=True, timeout=600)
        print(p.stdout, end="")
        rows = [l.split("|") for l in p.stdout.splitlines() if l.startswith("| parity-")]
        on_cpu = [int(r[8]) for r in rows if len(r) > 11 and r[8].strip().isdigit()]
        lane_ok = all(int(r[10]) == int(r[8]) > 0 for r in rows if len(r) > 11 and r[3].strip() == "all")
        ok = (p.returncode == 0 and len(rows) == 4 and len(on_cpu) == 4 and lane_ok
              and (policy != "cpu" or min(on_cpu) > 0))
        if ok:
            passed += len(rows)
        else:
            failed += 1
            print(f"FAIL: {arch} miss policy {policy}: exit {p.returncode}, experts on the CPU {on_cpu}, "
                  f"all on the lane where the host tier holds them: {lane_ok}\n{p.stderr[-2000:]}")
# The same with the predictor's prefetches into the device tier: copies in flight when a layer
# hands the CPU its misses (the lane starts while they land, where the host tier holds every
# expert); predictions never change results.  A device tier that holds every expert leaves the
# predictor idle and routes on the device.
for arch in ("qwen3moe", "deepseek2"):
    for policy in ("cpu", "auto"):
        p = subprocess.run([TOOL, "--model", model(arch, "q4_k_m"), "--backend", "sim", "--exact", "--steps", "6",
                            "--miss-policy", policy, "--predictor", "pregate", "--host-budgets", "all,25%",
                            "--device-budgets", "all,25%,min"], capture_output=True, text=True, timeout=600)
        print(p.stdout, end="")
        rows = [l.split("|") for l in p.stdout.splitlines() if l.startswith("| parity-")]
        n = len([r for r in rows if "bit-identical" in r[11]])
        routed_ok = len(rows) == 6 and all(r[9].strip() == ("7/7" if r[4].strip() == "all" else "0/7") for r in rows)
        if p.returncode == 0 and n == 6 and routed_ok:
            passed += n
        else:
            failed += 1
            print(f"FAIL: {arch} miss policy {policy} with pregate prefetches: exit {p.returncode}, "
                  f"{n} of 6 bit-identical, routed on the device where all are there: {routed_ok}\n"
                  f"{p.stderr[-2000:]}")
# Copies staged through a pinned ring instead of a registered host tier: the same bits; also
# with three staging threads and 16 KiB chunks, so that each part (36 KiB and more) is staged
# in pieces by several threads and copied chunk by chunk.
for arch, staging in (("olmoe", []), ("qwen3moe", []),
                      ("qwen3moe", ["--staging-threads", "3", "--staging-chunk", "16384"])):
    p = subprocess.run([TOOL, "--model", model(arch, "q4_k_m"), "--backend", "sim", "--exact", "--steps", "6",
                        "--pinning", "ring", "--host-budgets", "all,min", "--device-budgets", "25%,min"]
                       + staging, capture_output=True, text=True, timeout=600)
    print(p.stdout, end="")
    n = len([l for l in p.stdout.splitlines() if l.startswith("| parity-") and "bit-identical" in l])
    by = "by 3 threads" if staging else "staged through a pinned ring"
    if p.returncode == 0 and n == 4 and by in p.stderr:
        passed += n
    else:
        failed += 1
        print(f"FAIL: {arch} staged copies {staging}: exit {p.returncode}, {n} of 4 bit-identical\n{p.stderr[-2000:]}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
