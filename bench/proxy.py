#!/usr/bin/env python3
"""Baton's proxy against nginx, HAProxy, the pingora spike and a direct connection.

Every contender forwards to the same upstream (nginx with one worker, run by
Baton's process runtime) and is loaded by the same wrk command. Prints
requests/s and p50/p99 latency, and ratios to nginx. Run from the repository:

    python3 bench/proxy.py            # ROUNDS=5 DURATION=10s CONNECTIONS=64 SPIKE=1

Builds `baton` (`cargo build --release -p baton`) and the pingora spike
(`bench/pingora-spike`, its own Cargo project), both into CARGO_TARGET_DIR
when set; BATON_BIN=path uses an already built `baton` instead; SPIKE=0
leaves the pingora spike out.
Installs nginx, haproxy, wrk and cmake (the spike's zlib-ng needs it) with
apt-get when missing (as root).
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import ROOT, baton_binary, children, cpu_ticks, sh, stop_group, to_ms, upstream_folder

ROUNDS = int(os.environ.get("ROUNDS", "5"))
DURATION = os.environ.get("DURATION", "10s")
CONNECTIONS = os.environ.get("CONNECTIONS", "64")
THREADS = os.environ.get("THREADS", "2")
HOST = "bench.localhost"




def ensure_tools():
    missing = [t for t in ("nginx", "haproxy", "wrk", "cmake") if not shutil.which(t) and not os.path.exists(f"/usr/sbin/{t}")]
    if missing:
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", *missing)
    os.environ["PATH"] += ":/usr/sbin"




def start_baton(work):
    baton = baton_binary()
    data = f"{work}/data"
    server = subprocess.Popen(
        [baton, "server", "--data", data, "--api-listen", "127.0.0.1:0", "--proxy-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=open(f"{work}/server.log", "w"), text=True, start_new_session=True)
    words = server.stdout.readline().split()
    api, proxy = words[4], words[6].removeprefix("http://")
    # The API wants a credential: the CLI reads the data folder's admin.token
    # (BATON_DATA), and our own calls send it as a bearer token.
    env = dict(os.environ, BATON_API=api, BATON_DATA=data, NO_COLOR="1")
    sh(baton, "deploy", os.path.join(ROOT, "bench/upstream"), env=env, stdout=subprocess.DEVNULL)
    token = open(f"{data}/admin.token").read().strip()
    req = urllib.request.Request(f"{api}/api/v1/status", headers={"Authorization": f"Bearer {token}"})
    status = json.load(urllib.request.urlopen(req))
    live = status[0]["live"]
    # The proxy is a process of its own (started by the server): its CPU
    # time is what the proxy costs.
    proxy_pid = json.loads(subprocess.run([baton, "proxy", "status", "--json"], env=env, check=True,
                                          capture_output=True, text=True).stdout)["pid"]
    return server, proxy, live["address"], int(live["handle"].split("@")[0]), proxy_pid


def start_pingora_spike(work, upstream):
    """Baton's request path (Host routing, hold, drain counting) on pingora."""
    spike = os.path.join(ROOT, "bench/pingora-spike")
    sh("cargo", "build", "--release", "--locked", cwd=spike)
    binary = os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(spike, "target"), "release/pingora-spike")
    routes = f"{work}/pingora-routes.json"
    json.dump({"routes": {HOST: upstream}}, open(routes, "w"))
    addr = "127.0.0.1:18483"
    proc = subprocess.Popen(
        [binary, "--routes", routes, "--listen", addr, "--threads", str(os.cpu_count()),
         "--upgrade-sock", f"{work}/pingora-upgrade.sock"],
        stdout=subprocess.DEVNULL, stderr=open(f"{work}/pingora.log", "w"), start_new_session=True)
    return proc, addr


def start_nginx(work, upstream):
    conf = f"""
worker_processes auto;
pid {work}/nginx-proxy.pid;
error_log {work}/nginx-proxy.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/nb; proxy_temp_path {work}/np; fastcgi_temp_path {work}/nf;
  uwsgi_temp_path {work}/nu; scgi_temp_path {work}/ns;
  keepalive_requests 1000000;
  upstream app {{ server {upstream}; keepalive 256; }}
  server {{
    listen 127.0.0.1:18481;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_buffering on;
    }}
  }}
}}"""
    path = f"{work}/nginx-proxy.conf"
    open(path, "w").write(conf)
    return subprocess.Popen(["nginx", "-p", work, "-c", path, "-g", "daemon off;"], start_new_session=True), "127.0.0.1:18481"


def start_haproxy(work, upstream):
    conf = f"""
global
  nbthread {os.cpu_count()}
  maxconn 8192
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  option forwardfor
  http-reuse always
frontend web
  bind 127.0.0.1:18482
  default_backend app
backend app
  server a {upstream}
"""
    path = f"{work}/haproxy.cfg"
    open(path, "w").write(conf)
    return subprocess.Popen(["haproxy", "-db", "-f", path], start_new_session=True), "127.0.0.1:18482"


def wait_answering(addr):
    for _ in range(100):
        try:
            req = urllib.request.Request(f"http://{addr}/", headers={"Host": HOST})
            if urllib.request.urlopen(req, timeout=1).status == 200:
                return
        except Exception:
            time.sleep(0.05)
    raise SystemExit(f"nothing answers on {addr}")








def wrk(addr):
    out = subprocess.run(
        ["wrk", "-t", THREADS, "-c", CONNECTIONS, "-d", DURATION, "--latency", "-H", f"Host: {HOST}", f"http://{addr}/"],
        check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        print(f"  warning: {addr}: {errors.group(0) if errors else ''} {socket_errors.group(0) if socket_errors else ''}")
    return rps, p50, p99, total


def main():
    ensure_tools()
    work = tempfile.mkdtemp(prefix="baton-bench-")
    # A root server runs apps as baton-app, which must pass through to the data folder.
    os.chmod(work, 0o711)
    procs = []
    # Process groups started by others (the proxy, in a session of its own).
    stray = []
    upstream_pid = None
    try:
        server, baton_addr, upstream, upstream_pid, proxy_pid = start_baton(work)
        procs.append(server)
        stray.append(proxy_pid)
        nginx, nginx_addr = start_nginx(work, upstream)
        haproxy, haproxy_addr = start_haproxy(work, upstream)
        procs += [nginx, haproxy]
        contenders = {"direct": upstream, "nginx": nginx_addr, "haproxy": haproxy_addr, "baton": baton_addr}
        if os.environ.get("SPIKE", "1") != "0":
            spike, spike_addr = start_pingora_spike(work, upstream)
            procs.append(spike)
            contenders["pingora-spike"] = spike_addr
        for addr in contenders.values():
            wait_answering(addr)
        # Whose CPU time counts for each contender (the proxy's own
        # processes; nginx's workers exist once it answers).
        cpu_of = {"direct": [], "nginx": children(nginx.pid), "haproxy": [haproxy.pid], "baton": [proxy_pid]}
        if "pingora-spike" in contenders:
            cpu_of["pingora-spike"] = [spike.pid]
        results = {name: [] for name in contenders}
        tick_us = 1_000_000 / os.sysconf("SC_CLK_TCK")
        print(f"wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION} --latency, {ROUNDS} rounds interleaved, upstream nginx (1 worker) at {upstream}, {os.cpu_count()} cores")
        for r in range(ROUNDS):
            for name, addr in contenders.items():
                before = cpu_ticks(cpu_of[name])
                rps, p50, p99, total = wrk(addr)
                cpu = (cpu_ticks(cpu_of[name]) - before) * tick_us / total if cpu_of[name] else float("nan")
                results[name].append((rps, p50, p99, cpu))
                print(f"  round {r + 1} {name:13} {rps:>10.0f} req/s  p50 {p50:.3f} ms  p99 {p99:.3f} ms  proxy CPU {cpu:.1f} us/req")
        print()
        median = {n: tuple(statistics.median(x[i] for x in v) for i in range(4)) for n, v in results.items()}
        ng = median["nginx"]
        print("medians:")
        print(f"{'':13} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11} {'req/s ÷ nginx':>14} {'p99 ÷ nginx':>12} {'CPU ÷ nginx':>12}")
        for name, (rps, p50, p99, cpu) in median.items():
            print(f"{name:13} {rps:>10.0f} {p50:>8.3f} {p99:>8.3f} {cpu:>11.1f} {rps / ng[0]:>14.2f} {p99 / ng[2]:>12.2f} {cpu / ng[3]:>12.2f}")
    finally:
        for p in procs:
            stop_group(p.pid)
        leftover = upstream_folder(upstream_pid) if upstream_pid else None
        for pid in stray + ([upstream_pid] if upstream_pid else []):
            stop_group(pid)
        time.sleep(0.3)
        shutil.rmtree(work, ignore_errors=True)
        if leftover:
            shutil.rmtree(leftover, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
