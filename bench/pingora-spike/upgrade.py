#!/usr/bin/env python3
"""Pingora's graceful upgrade under load: does the hand-over lose a request?

Starts the bench upstream (nginx, one worker) and the pingora spike, puts two
wrk loads on the spike (keep-alive connections, and a fresh connection per
request), and while they run upgrades the spike UPGRADES times: a new process
started with `-u` and the same upgrade socket, then SIGQUIT to the old one,
which hands over its listening socket, keeps accepting for pingora's fixed
5 s, stops accepting, lets requests in flight finish (--grace-period) and
exits. Prints wrk's requests, non-2xx responses, socket errors and latency,
and when each old process exited. Run from the repository after building
the spike (bench/proxy.py builds it):

    python3 bench/pingora-spike/upgrade.py     # UPGRADES=3 EVERY=5 CONNECTIONS=16 GRACE=3 LINGER=0

Everything is on loopback and stops by itself.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPIKE_DIR = os.path.join(ROOT, "bench/pingora-spike")
BINARY = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(SPIKE_DIR, "target"), "release/pingora-spike")
UPGRADES = int(os.environ.get("UPGRADES", "3"))
EVERY = float(os.environ.get("EVERY", "5"))
CONNECTIONS = os.environ.get("CONNECTIONS", "16")
GRACE = os.environ.get("GRACE", "3")
# How long the old process keeps parked connections after it stops
# accepting (the spike's --linger-ms); 0 is pingora's own behaviour.
LINGER = os.environ.get("LINGER", "0")
HOST = "bench.localhost"
LISTEN = "127.0.0.1:18487"
UPSTREAM_PORT = 18497


def start_spike(work, n, upgrade):
    args = [BINARY, "--routes", f"{work}/routes.json", "--listen", LISTEN, "--threads", str(os.cpu_count()),
            "--upgrade-sock", f"{work}/upgrade.sock", "--grace-period", GRACE, "--linger-ms", LINGER]
    if upgrade:
        args.append("--upgrade")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(f"{work}/spike-{n}.log", "w"),
                            start_new_session=True)


def wait_for(path, text, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path) and text in open(path).read():
            return True
        time.sleep(0.02)
    return False


def wrk(duration, extra):
    return subprocess.Popen(
        ["wrk", "-t1", "-c", CONNECTIONS, "-d", f"{duration}s", "--latency", "-H", f"Host: {HOST}", *extra,
         f"http://{LISTEN}/"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def summary(name, out):
    def grab(pattern, default="0"):
        m = re.search(pattern, out)
        return m.group(1) if m else default
    requests = grab(r"(\d+) requests in")
    non_2xx = grab(r"Non-2xx or 3xx responses: (\d+)")
    errors = grab(r"Socket errors: (.*)", "none")
    p99 = grab(r"\s99%\s+(\S+)", "?")
    worst = grab(r"Latency\s+\S+\s+\S+\s+(\S+)", "?")
    return f"{name:11} requests {requests:>7}  non-2xx {non_2xx}  socket errors: {errors}  p99 {p99}  max {worst}"


def main():
    if not os.path.exists(BINARY):
        raise SystemExit(f"{BINARY} not built: run `cargo build --release` in {SPIKE_DIR} (or bench/proxy.py)")
    work = tempfile.mkdtemp(prefix="pingora-upgrade-")
    upstream = subprocess.Popen(["sh", os.path.join(ROOT, "bench/upstream/run.sh")],
                                env=dict(os.environ, PORT=str(UPSTREAM_PORT)), start_new_session=True)
    open(f"{work}/routes.json", "w").write(f'{{"routes": {{"{HOST}": "127.0.0.1:{UPSTREAM_PORT}"}}}}')
    spikes = [start_spike(work, 0, upgrade=False)]
    loads = []
    try:
        if not wait_for(f"{work}/spike-0.log", "Running", 10):
            raise SystemExit("the first spike did not start; see its log in " + work)
        time.sleep(0.5)
        duration = int(EVERY * (UPGRADES + 1) + 5 + int(GRACE) + 2)
        started = time.monotonic()
        loads = [("keep-alive", wrk(duration, [])), ("fresh conn", wrk(duration, ["-H", "Connection: close"]))]
        print(f"{UPGRADES} upgrades, one every {EVERY:g} s, under wrk -c{CONNECTIONS} keep-alive + "
              f"wrk -c{CONNECTIONS} Connection: close for {duration} s; grace period {GRACE} s, linger {LINGER} ms")
        for n in range(1, UPGRADES + 1):
            time.sleep(max(0.0, started + EVERY * n - time.monotonic()))
            old = spikes[-1]
            new = start_spike(work, n, upgrade=True)
            spikes.append(new)
            time.sleep(0.3)  # the new process is waiting on the upgrade socket
            t0 = time.monotonic()
            os.kill(old.pid, signal.SIGQUIT)
            took = wait_for(f"{work}/spike-{n}.log", "BootstrapComplete", 10)
            print(f"  t={t0 - started:5.1f}s upgrade {n}: pid {old.pid} → {new.pid}, sockets "
                  f"{'taken over in %.0f ms' % ((time.monotonic() - t0) * 1000) if took else 'NOT taken over'}")
        for name, proc in loads:
            out = proc.communicate(timeout=duration + 30)[0]
            print("  " + summary(name, out))
        for n, proc in enumerate(spikes[:-1]):
            try:
                proc.wait(timeout=15)
                print(f"  old process {n} (pid {proc.pid}) exited with {proc.returncode}")
            except subprocess.TimeoutExpired:
                print(f"  old process {n} (pid {proc.pid}) still running")
    finally:
        for _, proc in loads:
            if proc.poll() is None:
                proc.kill()
        for proc in spikes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
        try:
            os.killpg(upstream.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        time.sleep(0.3)
        if os.environ.get("KEEP"):
            print("logs kept in " + work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
