#!/usr/bin/env python3
"""Baton's proxy terminating TLS, against nginx and HAProxy doing the same.

All three serve the same certificate (a throwaway ECDSA P-256 CA and a leaf
for the bench host, made with the openssl CLI; the served chain is the leaf
then the CA) and forward to the same upstream (nginx with one worker
answering a fixed body over plain HTTP, run by Baton's process runtime, as
in bench/proxy.py). Three measurements per proxy, interleaved round by
round:

  h1 keep-alive   wrk over HTTPS, HTTP/1.1 keep-alive connections
  h2              h2load over HTTPS (ALPN h2), CLIENTS connections of
                  STREAMS concurrent streams; p50/p99 from its per-request log
  handshakes      wrk with `Connection: close`: every request on a new TLS
                  connection (wrk does not resume sessions: full handshakes)

Prints requests/s, p50/p99 latency and the proxy's own CPU time per request
(user + system of its processes), then Baton ÷ nginx and Baton ÷ HAProxy.
Run from the repository:

    python3 bench/tls.py    # ROUNDS=3 DURATION=8s CONNECTIONS=64 CLOSE_CONNECTIONS=16 H2_CLIENTS=16 H2_STREAMS=10 THREADS=2

Builds `baton` (`cargo build --release -p baton`, into CARGO_TARGET_DIR
when set); BATON_BIN=path uses an already built one. Installs nginx,
haproxy, wrk and h2load (nghttp2-client) with apt-get when missing (as
root). A run takes about ROUNDS x 9 x DURATION plus a few seconds; every
process it starts is stopped at the end, by its id.

wrk sends the URL's host as SNI and bench.localhost does not resolve here,
so wrk connects to https://127.0.0.1:PORT/ with `Host: bench.localhost`:
rustls ignores an IP address given as SNI and Baton then serves its first
certificate (nginx and HAProxy have only the one). h2load connects with
--connect-to and names the host in SNI and :authority.
"""

import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

from benchlib import ROOT, baton_binary, children, cpu_ticks, sh, stop_group, to_ms, upstream_folder

ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = os.environ.get("DURATION", "8s")
CONNECTIONS = os.environ.get("CONNECTIONS", "64")
CLOSE_CONNECTIONS = os.environ.get("CLOSE_CONNECTIONS", "16")
H2_CLIENTS = os.environ.get("H2_CLIENTS", "16")
H2_STREAMS = os.environ.get("H2_STREAMS", "10")
THREADS = os.environ.get("THREADS", "2")
HOST = "bench.localhost"
NGINX_PORT = 18681
HAPROXY_PORT = 18682
BODY = b"hello from the upstream\n"
MEASURES = ("h1 keep-alive", "h2", "handshakes")




def seconds(text):
    """wrk/h2load duration ("8s", "500ms", "2m", "10") in seconds."""
    value, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", text).groups()
    return float(value) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[unit]


def ensure_tools():
    os.environ["PATH"] += ":/usr/sbin"
    packages = {"nginx": "nginx", "haproxy": "haproxy", "wrk": "wrk", "h2load": "nghttp2-client", "openssl": "openssl"}
    missing = [pkg for tool, pkg in packages.items() if not shutil.which(tool)]
    if missing:
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", *missing)


def make_certificate(work):
    """A CA and a leaf for HOST (ECDSA P-256). Returns (chain, key, combined, ca)."""
    d = f"{work}/tls"
    os.makedirs(d)
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{d}/ca.key", **quiet)
    sh("openssl", "req", "-x509", "-new", "-key", f"{d}/ca.key", "-sha256", "-days", "30",
       "-subj", "/CN=Baton bench CA", "-addext", "basicConstraints=critical,CA:TRUE",
       "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", f"{d}/ca.pem", **quiet)
    sh("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{d}/key.pem", **quiet)
    sh("openssl", "req", "-new", "-key", f"{d}/key.pem", "-subj", f"/CN={HOST}", "-out", f"{d}/leaf.csr", **quiet)
    with open(f"{d}/leaf.ext", "w") as f:
        f.write(f"subjectAltName=DNS:{HOST}\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    sh("openssl", "x509", "-req", "-in", f"{d}/leaf.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key",
       "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "30", "-sha256",
       "-extfile", f"{d}/leaf.ext", "-out", f"{d}/leaf.pem", **quiet)
    leaf, ca, key = (open(f"{d}/{n}").read() for n in ("leaf.pem", "ca.pem", "key.pem"))
    open(f"{d}/chain.pem", "w").write(leaf + ca)
    # HAProxy wants the chain and the key in one file.
    open(f"{d}/combined.pem", "w").write(leaf + ca + key)
    return f"{d}/chain.pem", f"{d}/key.pem", f"{d}/combined.pem", f"{d}/ca.pem"




def start_baton(work, chain, key):
    baton = baton_binary()
    data = f"{work}/data"
    server = subprocess.Popen(
        [baton, "server", "--data", data, "--api-listen", "127.0.0.1:0", "--proxy-listen", "127.0.0.1:0",
         "--https-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=open(f"{work}/server.log", "w"), text=True, start_new_session=True)
    ready = server.stdout.readline()
    m = re.match(r"baton server ready: api (\S+) proxy http://(\S+) https https://(\S+) data ", ready)
    if not m:
        raise SystemExit(f"baton server did not start with HTTPS: {ready!r}; see {work}/server.log:\n"
                         + open(f"{work}/server.log").read()[-2000:])
    api, https = m.group(1), m.group(3)
    env = dict(os.environ, BATON_API=api, BATON_DATA=data, NO_COLOR="1")
    # The bench upstream, with the certificate from files.
    app = f"{work}/upstream"
    shutil.copytree(os.path.join(ROOT, "bench/upstream"), app)
    with open(f"{app}/baton.toml", "a") as f:
        f.write(f'\n[tls]\ncert = "{chain}"\nkey = "{key}"\n')
    sh(baton, "deploy", app, env=env, stdout=subprocess.DEVNULL)
    # Measure only once the proxy serves the certificate.
    deadline = time.time() + 60
    while True:
        certs = json.loads(subprocess.run([baton, "certs", "--json"], env=env, check=True,
                                          capture_output=True, text=True).stdout)
        mine = [c for c in certs if c["app"] == "bench"]
        if mine and mine[0]["served"]:
            break
        if time.time() > deadline:
            raise SystemExit(f"the certificate is not served after 60 s: {json.dumps(certs)}")
        time.sleep(0.2)
    token = open(f"{data}/admin.token").read().strip()
    req = urllib.request.Request(f"{api}/api/v1/status", headers={"Authorization": f"Bearer {token}"})
    live = json.load(urllib.request.urlopen(req))[0]["live"]
    # The proxy is a process of its own (started by the server): its CPU
    # time is what the proxy costs.
    proxy_pid = json.loads(subprocess.run([baton, "proxy", "status", "--json"], env=env, check=True,
                                          capture_output=True, text=True).stdout)["pid"]
    return server, https, live["address"], int(live["handle"].split("@")[0]), proxy_pid


def nginx_version():
    out = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
    return tuple(int(x) for x in re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", out).groups())


def start_nginx(work, upstream, chain, key):
    # `http2 on;` exists from 1.25.1; before, http2 is a `listen` parameter.
    if nginx_version() >= (1, 25, 1):
        listen = f"listen 127.0.0.1:{NGINX_PORT} ssl; http2 on;"
    else:
        listen = f"listen 127.0.0.1:{NGINX_PORT} ssl http2;"
    conf = f"""
worker_processes auto;
pid {work}/nginx-tls.pid;
error_log {work}/nginx-tls.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {work}/nb; proxy_temp_path {work}/np; fastcgi_temp_path {work}/nf;
  uwsgi_temp_path {work}/nu; scgi_temp_path {work}/ns;
  keepalive_requests 1000000;
  upstream app {{ server {upstream}; keepalive 256; }}
  server {{
    {listen}
    ssl_certificate {chain};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering on;
    }}
  }}
}}"""
    path = f"{work}/nginx-tls.conf"
    open(path, "w").write(conf)
    proc = subprocess.Popen(["nginx", "-p", work, "-c", path, "-g", "daemon off;"], start_new_session=True)
    return proc, f"127.0.0.1:{NGINX_PORT}"


def start_haproxy(work, upstream, combined):
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
  bind 127.0.0.1:{HAPROXY_PORT} ssl crt {combined} alpn h2,http/1.1
  http-request set-header X-Forwarded-Proto https
  default_backend app
backend app
  server a {upstream}
"""
    path = f"{work}/haproxy-tls.cfg"
    open(path, "w").write(conf)
    proc = subprocess.Popen(["haproxy", "-db", "-f", path], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(f"{work}/haproxy.log", "w"))
    return proc, f"127.0.0.1:{HAPROXY_PORT}"


def tls_get(addr, ca, sni, alpn):
    """One HTTPS GET / with Host: HOST; returns (status, body, TLS version, cipher, ALPN)."""
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=ca)
    if sni is None:
        ctx.check_hostname = False  # wrk's way: no usable SNI; the chain is still checked
    ctx.set_alpn_protocols(alpn)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname=sni) as tls:
            protocol, version, cipher = tls.selected_alpn_protocol(), tls.version(), tls.cipher()[0]
            if protocol != "http/1.1":
                return None, b"", version, cipher, protocol
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1], version, cipher, protocol


def wait_answering(name, addr, ca):
    """Waits until addr answers over HTTPS as the bench needs; prints what it negotiated."""
    error = None
    for _ in range(100):
        try:
            # As wrk does: no SNI, HTTP/1.1, Host header.
            status, body, version, cipher, _ = tls_get(addr, ca, None, ["http/1.1"])
            if status != 200 or body != BODY:
                raise RuntimeError(f"status {status}, body {body!r}")
            # As h2load does: SNI, h2 offered first.
            _, _, _, _, protocol = tls_get(addr, ca, HOST, ["h2", "http/1.1"])
            if protocol != "h2":
                raise RuntimeError(f"ALPN chose {protocol!r}, not h2")
            print(f"  {name:8} https://{addr}: {version} {cipher}, ALPN h2 and http/1.1, chain verified")
            return
        except Exception as e:  # not up yet
            error = e
            time.sleep(0.1)
    raise SystemExit(f"{name} does not answer HTTPS on {addr}: {error!r}")








def bounded_run(args):
    return subprocess.run(args, capture_output=True, text=True, timeout=seconds(DURATION) + 60)


def wrk(name, addr, close):
    args = ["wrk", "-t", THREADS, "-c", CLOSE_CONNECTIONS if close else CONNECTIONS, "-d", DURATION,
            "--latency", "-H", f"Host: {HOST}"]
    if close:
        args += ["-H", "Connection: close"]
    run = bounded_run(args + [f"https://{addr}/"])
    out = run.stdout
    if run.returncode != 0 or "Requests/sec" not in out:
        raise SystemExit(f"wrk against {name} failed ({run.returncode}): {out}{run.stderr}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p50 = to_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = to_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if errors or socket_errors:
        print(f"  warning: {name}: {errors.group(0) if errors else ''} {socket_errors.group(0) if socket_errors else ''}")
    return rps, p50, p99, total


def h2load(name, addr, work):
    port = addr.rsplit(":", 1)[1]
    log = f"{work}/h2load-{name}.log"
    run = bounded_run(["h2load", "-t", THREADS, "-c", H2_CLIENTS, "-m", H2_STREAMS, "-D", DURATION,
                       f"--log-file={log}", f"--connect-to={addr}", f"https://{HOST}:{port}/"])
    out = run.stdout
    finished = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    if run.returncode != 0 or not finished:
        raise SystemExit(f"h2load against {name} failed ({run.returncode}): {out}{run.stderr}")
    protocol = re.search(r"Application protocol: (\S+)", out)
    if not protocol or protocol.group(1) != "h2":
        print(f"  warning: {name}: h2load spoke {protocol.group(1) if protocol else 'an unknown protocol'}, not h2")
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", out)
    done, failed, errored, timeout = int(m.group(2)), int(m.group(4)), int(m.group(5)), int(m.group(6))
    codes = re.search(r"status codes: (\d+) 2xx", out)
    not_2xx = done - int(codes.group(1)) if codes else 0
    if failed or errored or timeout or not_2xx:
        print(f"  warning: {name}: h2load {failed} failed, {errored} errored, {timeout} timeout, {not_2xx} not 2xx")
    # One line per request: start (µs since the epoch), status, duration (µs).
    durations = sorted(int(line.split("\t")[2]) for line in open(log) if line.count("\t") == 2)
    os.unlink(log)
    if not durations:
        raise SystemExit(f"h2load against {name} logged no request: {out}")
    p50 = durations[len(durations) // 2] / 1000
    p99 = durations[min(len(durations) - 1, int(len(durations) * 0.99))] / 1000
    return float(finished.group(1)), p50, p99, done






def main():
    ensure_tools()
    work = tempfile.mkdtemp(prefix="baton-bench-tls-")
    # A root server runs apps as baton-app, which must pass through to the data folder.
    os.chmod(work, 0o711)
    procs = []
    # Process groups started by others (the proxy, in a session of its own).
    stray = []
    upstream_pid = None
    try:
        chain, key, combined, ca = make_certificate(work)
        server, baton_addr, upstream, upstream_pid, proxy_pid = start_baton(work, chain, key)
        procs.append(server)
        stray.append(proxy_pid)
        nginx, nginx_addr = start_nginx(work, upstream, chain, key)
        procs.append(nginx)
        haproxy, haproxy_addr = start_haproxy(work, upstream, combined)
        procs.append(haproxy)
        contenders = {"nginx": nginx_addr, "haproxy": haproxy_addr, "baton": baton_addr}
        print(f"upstream nginx (1 worker) at {upstream}; certificate ECDSA P-256 for {HOST} (leaf + CA); {os.cpu_count()} cores")
        for name, addr in contenders.items():
            wait_answering(name, addr, ca)
        # Whose CPU time counts for each contender (the proxy's own
        # processes; nginx's workers exist once it answers).
        cpu_of = {"nginx": children(nginx.pid), "haproxy": [haproxy.pid], "baton": [proxy_pid]}
        tick_us = 1_000_000 / os.sysconf("SC_CLK_TCK")
        print(f"h1 keep-alive: wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION} --latency; "
              f"h2: h2load -t{THREADS} -c{H2_CLIENTS} -m{H2_STREAMS} -D{DURATION}; "
              f"handshakes: wrk -t{THREADS} -c{CLOSE_CONNECTIONS} -d{DURATION} -H 'Connection: close'")
        print(f"{ROUNDS} rounds interleaved, about {ROUNDS * 9 * seconds(DURATION):.0f} s of load")
        results = {(m, p): [] for m in MEASURES for p in contenders}
        for r in range(ROUNDS):
            for measure in MEASURES:
                for name, addr in contenders.items():
                    before = cpu_ticks(cpu_of[name])
                    if measure == "h2":
                        rps, p50, p99, total = h2load(name, addr, work)
                    else:
                        rps, p50, p99, total = wrk(name, addr, close=measure == "handshakes")
                    cpu = (cpu_ticks(cpu_of[name]) - before) * tick_us / total if total else float("nan")
                    results[(measure, name)].append((rps, p50, p99, cpu))
                    print(f"  round {r + 1} {measure:13} {name:8} {rps:>9.0f} req/s  p50 {p50:7.3f} ms  "
                          f"p99 {p99:7.3f} ms  proxy CPU {cpu:6.1f} us/req")
        print()
        median = {k: tuple(statistics.median(x[i] for x in v) for i in range(4)) for k, v in results.items()}
        print("medians:")
        print(f"{'':13} {'':8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11}")
        for (measure, name), (rps, p50, p99, cpu) in median.items():
            print(f"{measure:13} {name:8} {rps:>9.0f} {p50:>8.3f} {p99:>8.3f} {cpu:>11.1f}")
        print()
        print("Baton ÷ the others (medians; req/s above 1 and p99/CPU below 1 favour Baton):")
        print(f"{'':13} {'req/s ÷ nginx':>14} {'p99 ÷ nginx':>12} {'CPU ÷ nginx':>12} "
              f"{'req/s ÷ haproxy':>16} {'p99 ÷ haproxy':>14} {'CPU ÷ haproxy':>14}")
        for measure in MEASURES:
            b, n, h = median[(measure, "baton")], median[(measure, "nginx")], median[(measure, "haproxy")]
            print(f"{measure:13} {b[0] / n[0]:>14.2f} {b[2] / n[2]:>12.2f} {b[3] / n[3]:>12.2f} "
                  f"{b[0] / h[0]:>16.2f} {b[2] / h[2]:>14.2f} {b[3] / h[3]:>14.2f}")
        print()
        print("Baton ÷ nginx req/s round by round:")
        for measure in MEASURES:
            rounds = [b[0] / n[0] for b, n in zip(results[(measure, "baton")], results[(measure, "nginx")])]
            print(f"  {measure:13} " + ", ".join(f"{x:.2f}" for x in rounds))
    finally:
        for p in procs:
            stop_group(p.pid)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        leftover = upstream_folder(upstream_pid) if upstream_pid else None
        for pid in stray + ([upstream_pid] if upstream_pid else []):
            stop_group(pid)
        time.sleep(0.5)
        shutil.rmtree(work, ignore_errors=True)
        if leftover:
            shutil.rmtree(leftover, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
