#!/usr/bin/env python3
"""How fast a failing canary is aborted, and what it costs the users.

Starts Baton (release build), deploys the example app, puts 32 wrk
connections on it, then deploys a release that answers 500 to FAIL_PERCENT
of its requests as a canary at SHARE of the clients (wrk keeps no cookie:
each request is a new client, so SHARE of the requests reach it). From the
proxy's access log: the first request the canary failed, the abort (the
deployment's canary step ending), the last request the canary served, and
how many requests failed. No peer does this on one host (Argo Rollouts and
Flagger need Kubernetes and a mesh): the figures stand alone.

    BATON_BIN=target/release/baton python3 bench/canary.py   # RUNS=5 SHARE=5 FAIL_PERCENT=20
"""

import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import ROOT, baton_binary

RUNS = int(os.environ.get("RUNS", "5"))
SHARE = int(os.environ.get("SHARE", "5"))
FAIL_PERCENT = int(os.environ.get("FAIL_PERCENT", "20"))
HOST = "hello.localhost"


def ms(stamp):
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() * 1000


def one_run(baton):
    work = tempfile.mkdtemp(prefix="baton-bench-canary-")
    os.chmod(work, 0o711)
    data = f"{work}/data"
    server = subprocess.Popen(
        [baton, "server", "--data", data, "--api-listen", "127.0.0.1:0", "--proxy-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=open(f"{work}/server.log", "w"), text=True, start_new_session=True)
    wrk = None
    try:
        words = server.stdout.readline().split()
        api, proxy = words[4], words[6].removeprefix("http://")
        env = dict(os.environ, BATON_API=api, BATON_DATA=data, NO_COLOR="1")
        subprocess.run([baton, "deploy", os.path.join(ROOT, "examples/hello")], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        bad = f"{work}/bad"
        shutil.copytree(os.path.join(ROOT, "examples/hello"), bad)
        manifest = open(f"{bad}/baton.toml").read()
        manifest = manifest.replace("[deploy]\n", f'[deploy]\nstrategy = "canary"\nsteps = ["{SHARE}%", "pause 10m", "100%"]\n')
        manifest = manifest.replace("[env]\n", f'[env]\nFAIL_PERCENT = "{FAIL_PERCENT}"\n')
        open(f"{bad}/baton.toml", "w").write(manifest)
        wrk = subprocess.Popen(["wrk", "-t2", "-c32", "-d60s", "-H", f"Host: {HOST}", f"http://{proxy}/"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        subprocess.run([baton, "deploy", bad], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        deployments = json.loads(subprocess.run([baton, "deployments", "hello", "--json"], env=env, check=True,
                                                capture_output=True, text=True).stdout)
        failed = deployments[0]
        canary = next(s for s in failed["steps"] if s["step"] == "canary")
        aborted = canary["finished_at"]
        new = failed["release_id"]
        lines = [json.loads(l) for l in open(f"{data}/logs/access.log") if l.strip()]
        on_canary = [l for l in lines if l["release"] == new]
        failing = [l for l in on_canary if l["status"] >= 500]
        first_fail = ms(failing[0]["time"]) if failing else None
        last_on_canary = max(ms(l["time"]) + l["duration_ms"] for l in on_canary) if on_canary else None
        return {
            "canary_requests": len(on_canary),
            "failed_requests": len(failing),
            "first_failure_to_abort_ms": aborted - first_fail if first_fail else None,
            "abort_to_last_canary_response_ms": last_on_canary - aborted if last_on_canary else None,
            "first_failure_to_everyone_on_old_ms": max(aborted, last_on_canary) - first_fail if first_fail else None,
            "error": failed["error"],
        }
    finally:
        if wrk:
            wrk.terminate()
            wrk.wait()
        # The server first (else it starts the proxy again), then the
        # proxy, then the apps it started (they outlive both by design):
        # the processes working in this run's data folder.
        server.terminate()
        server.wait()
        subprocess.run([baton, "proxy", "stop"], env=dict(os.environ, BATON_DATA=data),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if os.readlink(f"/proc/{pid}/cwd").startswith(data):
                    os.kill(int(pid), 15)
            except (OSError, ProcessLookupError):
                pass
        shutil.rmtree(work, ignore_errors=True)


def main():
    baton = baton_binary()
    print(f"canary at {SHARE}% of the clients, failing {FAIL_PERCENT}% of its requests, under wrk -c32; {RUNS} runs")
    results = []
    for n in range(RUNS):
        r = one_run(baton)
        results.append(r)
        print(f"  run {n + 1}: {r['canary_requests']} requests reached the canary, {r['failed_requests']} failed; "
              f"first failure → abort {r['first_failure_to_abort_ms']:.0f} ms; abort → last canary response "
              f"{r['abort_to_last_canary_response_ms']:.0f} ms")
    for key in ("failed_requests", "first_failure_to_abort_ms", "abort_to_last_canary_response_ms",
                "first_failure_to_everyone_on_old_ms"):
        values = [r[key] for r in results if r[key] is not None]
        print(f"{key}: median {statistics.median(values):.0f}, max {max(values):.0f}")
    print("reason given:", results[-1]["error"])


if __name__ == "__main__":
    sys.exit(main())
