#!/usr/bin/env python3
"""Docker runtime: time from "deploy requested" to "traffic switched", over
10 deploys of the Docker example (a static binary in a FROM scratch image),
and how much of it is Baton's own overhead rather than the app's boot.

    python3 bench/docker.py

The release (image build) is made before the clock starts; each deploy is
then timed from its record's creation to the end of its switch step, and
split into: start_target (Docker creates and starts the container),
health_check (the app boots and answers /health; an upper bound of its boot
time), and the rest (Baton's bookkeeping, hold and switch).
"""

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOYS = int(os.environ.get("DEPLOYS", "10"))


def main():
    subprocess.run(["cargo", "build", "--release", "--locked", "-p", "baton"], cwd=ROOT, check=True)
    subprocess.run(["bash", os.path.join(ROOT, "examples/docker-hello/build.sh")], check=True)
    baton = os.path.join(ROOT, "target/release/baton")
    work = tempfile.mkdtemp(prefix="baton-bench-docker-")
    name = f"benchdocker{os.getpid()}"
    server = subprocess.Popen(
        [baton, "server", "--data", f"{work}/data", "--api-listen", "127.0.0.1:0", "--proxy-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=open(f"{work}/server.log", "w"), text=True, start_new_session=True)
    api = server.stdout.readline().split()[4]
    env = dict(os.environ, BATON_API=api, NO_COLOR="1")
    rows = []
    try:
        for i in range(DEPLOYS + 1):
            app = f"{work}/v{i}"
            shutil.copytree(os.path.join(ROOT, "examples/docker-hello"), app, ignore=shutil.ignore_patterns("target"))
            with open(f"{app}/Dockerfile", "a") as f:
                f.write(f"# version {i}\n")
            manifest = open(f"{app}/baton.toml").read().replace('name = "docker-hello"', f'name = "{name}"')
            manifest = manifest.replace("docker-hello.localhost", f"{name}.localhost")
            open(f"{app}/baton.toml", "w").write(manifest)
            # Build the image first (not timed): `--no-wait` then wait it out.
            out = subprocess.run([baton, "deploy", app, "--json"], env=env, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(out.stderr)
            d = json.loads(out.stdout)
            if i == 0:
                continue  # the first deploy has nothing to switch from
            steps = {s["step"]: s for s in d["steps"]}
            total = steps["switch"]["finished_at"] - d["created_at"]
            start = steps["start_target"]["finished_at"] - steps["start_target"]["started_at"]
            health = steps["health_check"]["finished_at"] - steps["health_check"]["started_at"]
            rows.append((total, start, health, total - start - health))
        print(f"{DEPLOYS} deploys of a FROM-scratch container, ms (deploy requested → traffic switched):")
        print(f"{'':>4} {'total':>7} {'start_target':>13} {'health_check':>13} {'rest':>6}")
        for n, r in enumerate(rows, 1):
            print(f"{n:>4} {r[0]:>7} {r[1]:>13} {r[2]:>13} {r[3]:>6}")
        med = [statistics.median(r[i] for r in rows) for i in range(4)]
        print(f"{'med':>4} {med[0]:>7.0f} {med[1]:>13.0f} {med[2]:>13.0f} {med[3]:>6.0f}")
        print(f"Baton overhead (total minus health_check, which bounds the app's boot): "
              f"median {med[0] - med[2]:.0f} ms, max {max(r[0] - r[2] for r in rows)} ms "
              f"(of which Docker's container create+start: median {med[1]:.0f} ms)")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        # The proxy outlives the server by design: stop it too.
        subprocess.run([baton, "proxy", "stop"], env=dict(os.environ, BATON_DATA=f"{work}/data"),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(f"docker rm -f $(docker ps -aq --filter label=baton.app={name}) >/dev/null 2>&1; "
                       f"docker rmi -f $(docker images -q --filter label=baton.app={name}) >/dev/null 2>&1",
                       shell=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
