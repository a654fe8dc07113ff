#!/usr/bin/env python3
"""Migrations: 1,000 small migrations applied to PostgreSQL by Baton and by
sqlx-cli, side by side in one run, then `baton db validate` over them.

    python3 bench/migrations.py

Both tools get the same SQL (one CREATE TABLE and one INSERT per file), each
round on a fresh database of one throwaway PostgreSQL server with its default
settings (fsync on), the tools alternating round by round. Each applies every
migration in its own transaction and records it in its history table
(`flyway_schema_history` for Baton, `_sqlx_migrations` for sqlx). sqlx-cli is
built once into bench/.tools (not committed). Figures are medians.
"""

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COUNT = int(os.environ.get("MIGRATIONS", "1000"))
ROUNDS = int(os.environ.get("ROUNDS", "3"))
SQLX_VERSION = "0.8.6"


def run(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def pg_bin():
    versions = sorted(
        (d for d in os.listdir("/usr/lib/postgresql") if d.isdigit()), key=int
    )
    return f"/usr/lib/postgresql/{versions[-1]}/bin"


def as_postgres(args):
    return ["runuser", "-u", "postgres", "--"] + args if os.getuid() == 0 else args


def start_postgres(work):
    if not os.path.isdir("/usr/lib/postgresql"):
        run("apt-get", "install", "-y", "-qq", "postgresql")
    data = f"{work}/pg"
    if os.getuid() == 0:
        run("chown", "-R", "postgres:postgres", work)
    run(*as_postgres([f"{pg_bin()}/initdb", "-U", "bench", "--auth=trust", "-D", data]),
        stdout=subprocess.DEVNULL)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        as_postgres([f"{pg_bin()}/postgres", "-D", data, "-p", str(port), "-k", work,
                     "-c", "listen_addresses=127.0.0.1"]),
        stdout=subprocess.DEVNULL, stderr=open(f"{work}/pg.log", "w"), start_new_session=True)
    for _ in range(600):
        if subprocess.run([f"{pg_bin()}/pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode == 0:
            break
        time.sleep(0.05)
    return server, f"postgres://bench@127.0.0.1:{port}"


def psql(base, db, sql):
    return subprocess.run(["psql", "-X", "-q", "-A", "-t", "-d", f"{base}/{db}", "-c", sql],
                          check=True, capture_output=True, text=True).stdout.strip()


def sqlx_cli():
    tools = os.path.join(ROOT, "bench/.tools")
    sqlx = os.path.join(tools, "bin/sqlx")
    if not os.path.exists(sqlx):
        run("cargo", "install", "sqlx-cli", "--version", SQLX_VERSION, "--locked",
            "--no-default-features", "--features", "postgres,completions", "--root", tools)
    return sqlx


def main():
    run("cargo", "build", "--release", "--locked", "-p", "baton", cwd=ROOT)
    baton = os.path.join(ROOT, "target/release/baton")
    sqlx = sqlx_cli()
    work = tempfile.mkdtemp(prefix="baton-bench-migrations-")
    os.chmod(work, 0o755)
    app = f"{work}/app"
    os.makedirs(f"{app}/db/migrations")
    os.makedirs(f"{work}/sqlx")
    with open(f"{app}/baton.toml", "w") as f:
        f.write('name = "bench"\nhosts = ["bench.localhost"]\n[web]\ncommand = "true"\n'
                '[database]\nmigrations = "db/migrations"\n')
    for i in range(1, COUNT + 1):
        sql = f"CREATE TABLE t{i} (id bigint PRIMARY KEY, name text);\nINSERT INTO t{i} VALUES (1, 'row {i}');\n"
        open(f"{app}/db/migrations/V{i}__create_t{i}.sql", "w").write(sql)
        open(f"{work}/sqlx/{i:05d}_create_t{i}.sql", "w").write(sql)

    server, base = start_postgres(work)
    env = dict(os.environ, NO_COLOR="1")
    times = {"baton": [], "sqlx": []}
    try:
        for r in range(ROUNDS):
            for tool in (["baton", "sqlx"] if r % 2 == 0 else ["sqlx", "baton"]):
                db = f"{tool}_{r}"
                psql(base, "postgres", f"CREATE DATABASE {db}")
                url = f"{base}/{db}"
                if tool == "baton":
                    cmd = [baton, "db", "migrate", app, "--url", url]
                else:
                    cmd = [sqlx, "migrate", "run", "--source", f"{work}/sqlx", "--database-url", url]
                started = time.perf_counter()
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
                elapsed = time.perf_counter() - started
                table = "flyway_schema_history" if tool == "baton" else "_sqlx_migrations"
                applied = psql(base, db, f"SELECT count(*) FROM {table} WHERE success")
                assert applied == str(COUNT), f"{tool} applied {applied} of {COUNT}"
                times[tool].append(elapsed)
                print(f"round {r + 1}: {tool:5} applied {COUNT} migrations in {elapsed:.2f} s", flush=True)

        validate = []
        url = f"{base}/baton_0"
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run([baton, "db", "validate", app, "--url", url], check=True, env=env,
                           stdout=subprocess.DEVNULL)
            validate.append(time.perf_counter() - started)
        info = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run([sqlx, "migrate", "info", "--source", f"{work}/sqlx", "--database-url", f"{base}/sqlx_0"],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            info.append(time.perf_counter() - started)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)

    b, s = statistics.median(times["baton"]), statistics.median(times["sqlx"])
    print()
    print(f"migrate {COUNT} migrations, median of {ROUNDS}:")
    print(f"  baton db migrate   {b:6.2f} s  ({b / COUNT * 1000:.2f} ms per migration)")
    print(f"  sqlx migrate run   {s:6.2f} s  ({s / COUNT * 1000:.2f} ms per migration)")
    print(f"  baton / sqlx time  {b / s:.2f}  (below 1: Baton is faster)")
    print(f"validate {COUNT} applied migrations, median of 5:")
    print(f"  baton db validate  {statistics.median(validate) * 1000:6.0f} ms  (goal: under 1 s)")
    print(f"  sqlx migrate info  {statistics.median(info) * 1000:6.0f} ms  (sqlx's nearest command, for scale)")


if __name__ == "__main__":
    sys.exit(main())
