"""Shared by the integration tests that start `moeserve serve`: the pass/fail counters and the
closing `N passed, N failed` line, seeded test models cached in the build tree, and a server
on a free loopback port whose log is drained while it runs (a full pipe would block it)."""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import sys
import threading
import time
import urllib.error
import urllib.request

import openai

ROOT = os.environ.get("MOE_SOURCE_ROOT", os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
BUILD = os.environ.get("MOE_BUILD_ROOT", ".")
counts = {"passed": 0, "failed": 0}


def check(cond, what):
    if cond:
        counts["passed"] += 1
    else:
        counts["failed"] += 1
        print(f"FAIL: {what}", flush=True)


def finish():
    print(f"{counts['passed']} passed, {counts['failed']} failed")
    sys.exit(1 if counts["failed"] else 0)


def model_path(name, *args):
    d = os.path.join(BUILD, "test-models")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, name + ".gguf")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}"
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_model.py"), *args, "-o", tmp],
                       check=True, capture_output=True)
        os.rename(tmp, path)
    return path


class Server:
    """`moeserve serve --model MODEL --port 0` with test defaults; `extra` arguments come last,
    so their --set overrides win."""

    def __init__(self, moeserve, model, *extra):
        # In a sanitizer build freed memory sits in ASan's quarantine (256 MiB by default) and
        # would read as growth: bound it so that memory checks mean the same there.
        env = dict(os.environ, ASAN_OPTIONS=os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=8")
        self.proc = subprocess.Popen(
            [moeserve, "serve", "--model", model, "--port", "0", "--set", "compute.threads=2",
             "--set", "kv.context_length=256", "--set", "batching.max_running=16", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self._log = []
        self._drain = threading.Thread(target=lambda: self._log.extend(iter(self.proc.stderr.readline, b"")),
                                       daemon=True)
        self._drain.start()
        line = self.proc.stdout.readline().decode()
        m = re.search(r"listening on ([0-9.]+):(\d+)", line)
        assert m, f"no listening line: {line!r}"
        self.host, self.port = m.group(1), int(m.group(2))
        self.base = f"http://{self.host}:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError as e:
                assert e.code == 503, e.code
            except OSError:
                pass
            time.sleep(0.05)

    def client(self):
        return openai.OpenAI(base_url=self.base + "/v1", api_key="unused", max_retries=0, timeout=120)

    def n_fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        """SIGTERM, then the exit status; the server's log is in .err afterwards."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = -9
        self._drain.join(timeout=10)
        self.err = b"".join(self._log).decode(errors="replace")
        return rc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nginx:
    """Debian's nginx in front of replicas, with deploy/nginx-moeserve.conf as shipped (only its
    ports changed: the replicas' for 8081.., a free one for the front), in a private prefix;
    .port is the front's port.  check_config() runs `nginx -t` on it."""

    def __init__(self, ports):
        self.dir = tempfile.mkdtemp(prefix="moeserve-nginx-")
        conf = open(os.path.join(ROOT, "deploy", "nginx-moeserve.conf"), encoding="utf-8").read()
        lines = []
        for line in conf.splitlines(keepends=True):
            m = re.match(r"(\s*server 127\.0\.0\.1:)808(\d)( .*)", line)
            if m:  # one line per replica, in place of the three of the file
                if m.group(2) == "1":
                    lines += [f"{m.group(1)}{p}{m.group(3)}\n" for p in ports]
                continue
            lines.append(line)
        self.port = free_port()
        conf = "".join(lines).replace("listen 127.0.0.1:8080;", f"listen 127.0.0.1:{self.port};")
        with open(os.path.join(self.dir, "moeserve.conf"), "w") as f:
            f.write(conf)
        d = self.dir
        self.conf = os.path.join(d, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(f"""daemon off;
worker_processes 1;
error_log {d}/error.log info;
pid {d}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    include {d}/moeserve.conf;
}}
""")
        self.binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = None

    def check_config(self):
        return subprocess.run([self.binary, "-t", "-p", self.dir, "-c", self.conf], capture_output=True, text=True)

    def start(self):
        self.proc = subprocess.Popen([self.binary, "-p", self.dir, "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start: " + open(os.path.join(self.dir, "error.log")).read()[-1000:])

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish what is in flight
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
