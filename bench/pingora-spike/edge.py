#!/usr/bin/env python3
"""Hostile and malformed requests against a proxy: what status each gets.

The edge cases issue 14 lists as "must keep holding" (or to be added),
sent as raw bytes to ADDR (default: the spike on 127.0.0.1:18483), one
connection each; prints the status line (or what happened) per case.

    python3 bench/pingora-spike/edge.py [ADDR]
"""

import socket
import sys

ADDR = (sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:18483").rsplit(":", 1)
H = "bench.localhost"
CASES = [
    ("plain GET", f"GET / HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    ("CL + TE", f"POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("two different Content-Length", f"POST / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
    ("obs-fold", f"GET / HTTP/1.1\r\nHost: {H}\r\nX-A: a\r\n b\r\n\r\n"),
    ("NUL in a header value", f"GET / HTTP/1.1\r\nHost: {H}\r\nX-A: a\0b\r\n\r\n"),
    ("64 KiB header", f"GET / HTTP/1.1\r\nHost: {H}\r\nX-Big: {'a' * 65536}\r\n\r\n"),
    ("100 KiB URI", f"GET /{'a' * 102400} HTTP/1.1\r\nHost: {H}\r\n\r\n"),
    ("two Host headers", f"GET / HTTP/1.1\r\nHost: {H}\r\nHost: other.localhost\r\n\r\n"),
    ("HTTP/1.1 without Host", "GET / HTTP/1.1\r\n\r\n"),
]


def probe(raw):
    s = socket.create_connection((ADDR[0], int(ADDR[1])), timeout=5)
    try:
        s.sendall(raw.encode("latin-1"))
        data = s.recv(65536)
        return data.split(b"\r\n", 1)[0].decode("latin-1") if data else "connection closed, no response"
    except ConnectionResetError:
        return "connection reset"
    except socket.timeout:
        return "no answer in 5 s"
    finally:
        s.close()


for name, raw in CASES:
    print(f"{name:30} {probe(raw)}")
