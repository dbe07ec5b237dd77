#!/usr/bin/env python3
"""The short soak in CI: tools/soak.py for 45 seconds with four clients against `moeserve serve`
(this build: the sanitizer run makes it the ASan soak too) on a seeded tiny model, with every
401st expert read failing (the steps are retried; every answer must still be right).
Usage: test_soak.py /path/to/moeserve"""
import os
import subprocess
import sys

from serving import ROOT, model_path

model = model_path("soak-qwen3moe-tiny-q4_k_m", "--arch", "qwen3moe", "--preset", "tiny", "--type", "q4_k_m",
                   "--seed", "17")
rc = subprocess.call([sys.executable, os.path.join(ROOT, "tools", "soak.py"), "--moeserve", sys.argv[1],
                      "--model", model, "--seconds", "45", "--clients", "4", "--faults", "401"])
sys.exit(rc)
