"""What the bench scripts share: running commands, the `baton` binary to
measure, wrk's durations, a process's CPU time, and stopping what a run
started. Imported by the scripts beside it (`python3 bench/X.py`)."""

import os
import re
import signal
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def baton_binary():
    """BATON_BIN when set, else a release build (into CARGO_TARGET_DIR when set)."""
    if os.environ.get("BATON_BIN"):
        return os.environ["BATON_BIN"]
    sh("cargo", "build", "--release", "--locked", "-p", "baton", cwd=ROOT)
    return os.path.join(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"), "release/baton")


def to_ms(text):
    """A wrk latency ("512.00us", "1.20ms", "2.01s") in milliseconds."""
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def cpu_ticks(pids):
    """User plus system CPU time of processes, in clock ticks."""
    total = 0
    for pid in pids:
        try:
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, IndexError):
            pass
    return total


def children(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def stop_group(pid):
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def upstream_folder(group):
    """The folder the bench upstream's run.sh made for its nginx (its -p),
    looked for among the upstream's process group (a log stamper leads it)."""
    for entry in os.listdir("/proc"):
        try:
            if not entry.isdigit() or int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[2]) != group:
                continue
            # nginx rewrites its arguments as one line ("nginx: master process nginx -p ...").
            args = open(f"/proc/{entry}/cmdline").read().replace("\0", " ")
        except (OSError, IndexError, ValueError):
            continue
        folder = re.search(r"-p (/tmp/baton-bench-upstream\.[^\s/]+)", args)
        if folder:
            return folder.group(1)
    return None
