#!/usr/bin/env python3
"""What a restart and an upgrade of Baton cost under load, beside nginx's own
binary upgrade (USR2, WINCH, QUIT) as the anchor.

Baton serves the bench upstream (nginx with one worker, run by Baton's
process runtime); nginx (one worker per core, upstream keep-alive) proxies
to the same upstream. Each contender is loaded by two wrk runs at once:
CONNECTIONS keep-alive connections, and CONNECTIONS connections that each
send one request (`Connection: close`). While they run, the scenario's
action is taken EVENTS times, one every EVERY seconds:

  baton restart   SIGTERM to `baton server`, then start it again
  baton kill -9   kill -9 of `baton server`, then start it again
  baton upgrade   a fresh copy of the binary renamed over the old, then
                  `baton upgrade` (server re-executed, proxy taken over)
  nginx upgrade   USR2 to the master (a new master from the binary), WINCH
                  to the old master (its workers finish), QUIT to it

Prints requests, failed requests (non-2xx and socket errors) and the p99
and maximum latency of each scenario, and ratios to nginx's upgrade. Run
from the repository:

    python3 bench/handover.py      # EVENTS=5 EVERY=2 CONNECTIONS=16

Builds `baton` (`cargo build --release -p baton`, into CARGO_TARGET_DIR
when set); BATON_BIN=path uses an already built one. Installs nginx and wrk
with apt-get when missing (as root). Everything is on loopback and stops by
itself.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import ROOT, baton_binary, sh

EVENTS = int(os.environ.get("EVENTS", "5"))
EVERY = float(os.environ.get("EVERY", "2"))
CONNECTIONS = os.environ.get("CONNECTIONS", "16")
HOST = "bench.localhost"
BATON_PROXY = "127.0.0.1:18581"
BATON_API = "127.0.0.1:18571"
NGINX = "127.0.0.1:18591"




def ensure_tools():
    os.environ["PATH"] += ":/usr/sbin"
    missing = [t for t in ("nginx", "wrk") if not shutil.which(t)]
    if missing:
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", *missing)




class Baton:
    def __init__(self, work, built):
        self.work = work
        self.built = built
        self.bin = f"{work}/bin/baton"
        os.makedirs(f"{work}/bin")
        shutil.copy(built, self.bin)
        self.data = f"{work}/data"
        self.env = dict(os.environ, BATON_API=f"http://{BATON_API}", BATON_DATA=self.data, NO_COLOR="1")
        self.server = None
        self.start()
        sh(self.bin, "deploy", os.path.join(ROOT, "bench/upstream"), env=self.env, stdout=subprocess.DEVNULL)
        token = open(f"{self.data}/admin.token").read().strip()
        req = urllib.request.Request(f"http://{BATON_API}/api/v1/status", headers={"Authorization": f"Bearer {token}"})
        live = json.load(urllib.request.urlopen(req))[0]["live"]
        self.upstream = live["address"]
        self.upstream_pid = int(live["handle"].split("@")[0])

    def start(self):
        self.server = subprocess.Popen(
            [self.bin, "server", "--data", self.data, "--api-listen", BATON_API, "--proxy-listen", BATON_PROXY],
            stdout=subprocess.PIPE, stderr=open(f"{self.work}/server.log", "a"), text=True, start_new_session=True)
        line = self.server.stdout.readline()
        if "ready" not in line:
            raise SystemExit(f"baton server did not start; see {self.work}/server.log")

    def restart(self):
        self.server.send_signal(signal.SIGTERM)
        self.server.wait(timeout=30)
        self.start()

    def kill9(self):
        self.server.kill()
        self.server.wait(timeout=30)
        self.start()

    def upgrade(self):
        fresh = self.bin + ".new"
        shutil.copy(self.built, fresh)
        os.rename(fresh, self.bin)
        sh(self.bin, "upgrade", env=self.env, stdout=subprocess.DEVNULL)

    def proxy_pid(self):
        out = subprocess.run([self.bin, "proxy", "status", "--json"], env=self.env, capture_output=True, text=True)
        return json.loads(out.stdout)["pid"] if out.returncode == 0 else None

    def stop(self):
        self.server.send_signal(signal.SIGTERM)
        self.server.wait(timeout=30)
        subprocess.run([self.bin, "proxy", "stop"], env=self.env, stdout=subprocess.DEVNULL)
        try:
            os.killpg(self.upstream_pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass


class Nginx:
    def __init__(self, work, upstream):
        self.dir = f"{work}/nginx"
        os.makedirs(f"{self.dir}/logs")
        self.pidfile = f"{self.dir}/nginx.pid"
        conf = f"""
worker_processes {os.cpu_count()};
pid {self.pidfile};
error_log {self.dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {self.dir}/body;
  proxy_temp_path {self.dir}/proxy;
  fastcgi_temp_path {self.dir}/fastcgi;
  uwsgi_temp_path {self.dir}/uwsgi;
  scgi_temp_path {self.dir}/scgi;
  keepalive_requests 1000000;
  upstream app {{ server {upstream}; keepalive 64; }}
  server {{
    listen {NGINX};
    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""
        open(f"{self.dir}/nginx.conf", "w").write(conf)
        # Daemonised, as its binary upgrade expects: the new master is the
        # old master's child, and the old one exits. By its full path: the
        # upgrade executes argv[0].
        sh(shutil.which("nginx"), "-p", self.dir, "-c", f"{self.dir}/nginx.conf")
        wait(lambda: os.path.exists(self.pidfile))

    def master(self, suffix=""):
        return int(open(self.pidfile + suffix).read())

    def upgrade(self):
        old = self.master()
        os.kill(old, signal.SIGUSR2)
        wait(lambda: os.path.exists(self.pidfile + ".oldbin") and os.path.exists(self.pidfile)
             and self.master() != old)
        os.kill(old, signal.SIGWINCH)
        os.kill(old, signal.SIGQUIT)
        wait(lambda: not alive(old), within=30)

    def stop(self):
        try:
            os.kill(self.master(), signal.SIGQUIT)
        except (OSError, ValueError):
            pass


def alive(pid):
    try:
        os.kill(pid, 0)
        return not open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def wait(check, within=10, what="a hand-over"):
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)


LOADS = []


def wrk(addr, duration, extra):
    LOADS.append(subprocess.Popen(
        ["wrk", "-t1", "-c", CONNECTIONS, "-d", f"{duration}s", "--latency", "--timeout", "10s",
         "-H", f"Host: {HOST}", *extra, f"http://{addr}/"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return LOADS[-1]


def millis(text):
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]


def parse(out):
    def grab(pattern, default="0"):
        m = re.search(pattern, out)
        return m.group(1) if m else default
    requests = int(grab(r"(\d+) requests in"))
    failed = int(grab(r"Non-2xx or 3xx responses: (\d+)"))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    detail = [f"non-2xx {failed}"] if failed else []
    if errors:
        failed += sum(int(n) for n in errors.groups())
        detail.append(errors.group(0))
    return (requests, failed, millis(grab(r"\s99%\s+(\S+)", "?")), millis(grab(r"Latency\s+\S+\s+\S+\s+(\S+)", "?")),
            "; ".join(detail))


def scenario(name, addr, action):
    duration = int(EVERY * (EVENTS + 1)) + 1
    loads = [wrk(addr, duration, []), wrk(addr, duration, ["-H", "Connection: close"])]
    started = time.monotonic()
    took = []
    for n in range(1, EVENTS + 1):
        time.sleep(max(0.0, started + EVERY * n - time.monotonic()))
        t0 = time.monotonic()
        action()
        took.append((time.monotonic() - t0) * 1000)
    results = [parse(p.communicate(timeout=duration + 30)[0]) for p in loads]
    requests = sum(r[0] for r in results)
    failed = sum(r[1] for r in results)
    p99 = max(r[2] for r in results)
    worst = max(r[3] for r in results)
    print(f"  {name:14} {requests:>8} requests  {failed:>4} failed  p99 {p99:7.2f} ms  max {worst:8.2f} ms"
          f"  (each {EVENTS} events took {min(took):.0f}–{max(took):.0f} ms)")
    for kind, r in zip(("keep-alive", "fresh conn"), results):
        if r[4]:
            print(f"      {kind}: {r[4]}")
    return requests, failed, p99, worst


def main():
    ensure_tools()
    built = baton_binary()
    work = tempfile.mkdtemp(prefix="baton-handover-")
    # A root server runs apps as baton-app, which must pass through to the data folder.
    os.chmod(work, 0o711)
    baton = nginx = None
    try:
        baton = Baton(work, built)
        nginx = Nginx(work, baton.upstream)
        print(f"{EVENTS} events, one every {EVERY:g} s, under wrk -c{CONNECTIONS} keep-alive + "
              f"wrk -c{CONNECTIONS} Connection: close; upstream nginx (1 worker) at {baton.upstream}; "
              f"{os.cpu_count()} cores")
        results = {
            "nginx upgrade": scenario("nginx upgrade", NGINX, nginx.upgrade),
            "baton restart": scenario("baton restart", BATON_PROXY, baton.restart),
            "baton kill -9": scenario("baton kill -9", BATON_PROXY, baton.kill9),
            "baton upgrade": scenario("baton upgrade", BATON_PROXY, baton.upgrade),
        }
        anchor = results["nginx upgrade"]
        print()
        print(f"{'':14} {'requests':>9} {'failed':>7} {'p99 ms':>8} {'max ms':>8} {'req ÷ nginx':>12} {'max ÷ nginx':>12}")
        for name, (requests, failed, p99, worst) in results.items():
            print(f"{name:14} {requests:>9} {failed:>7} {p99:>8.2f} {worst:>8.2f} "
                  f"{requests / anchor[0]:>12.2f} {worst / anchor[3]:>12.2f}")
    finally:
        for load in LOADS:
            if load.poll() is None:
                load.kill()
        if nginx:
            nginx.stop()
        if baton:
            baton.stop()
        time.sleep(0.5)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
