#!/usr/bin/env python3
"""Counts the messages a cluster's nodes send one another: subscribes to
`streamweave.>` on NATS (as one more listener would) for some seconds and
prints each subject's messages a second and the bytes a second in all.
Usage: nats_messages.py NATS_URL SECONDS"""
import socket
import sys
import time
from urllib.parse import urlparse

url = urlparse(sys.argv[1])
seconds = float(sys.argv[2])
sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 4222))
sock.recv(4096)  # INFO
sock.sendall(b'CONNECT {"verbose":false,"name":"bench-counter"}\r\nSUB streamweave.> 1\r\n')
sock.settimeout(0.2)
buffer, counts, payload_bytes = b"", {}, 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    try:
        data = sock.recv(1 << 20)
    except socket.timeout:
        continue
    if not data:
        break
    buffer += data
    while True:
        line_end = buffer.find(b"\r\n")
        if line_end < 0:
            break
        line = buffer[:line_end]
        if line.startswith(b"MSG "):
            fields = line.split()
            size = int(fields[-1])
            if len(buffer) < line_end + 2 + size + 2:
                break
            subject = fields[1].decode()
            counts[subject] = counts.get(subject, 0) + 1
            payload_bytes += size
            buffer = buffer[line_end + 2 + size + 2:]
        else:
            if line == b"PING":
                sock.sendall(b"PONG\r\n")
            buffer = buffer[line_end + 2:]
rates = ", ".join(f"{subject} {count / seconds:.0f}/s" for subject, count in sorted(counts.items()))
print(f"{rates or 'none'}; {payload_bytes / seconds / 1000:.1f} kB/s of payload")
