#!/usr/bin/env python3
"""Hold N idle TLS + HTTP/2 client connections open, for the memory-per-connection
figure of bench/proxy-overhead.sh.

Each connection is used once, like a client-go connection between requests: TLS with
ALPN h2, the preface, SETTINGS (and the ACK of the server's), one GET, its response read
to END_STREAM. Then it stays open and idle. Prints "ready N" once all are open, then
waits for stdin to close (the caller measures the proxy's memory meanwhile) and closes
them.

Usage: idle-conns.py HOST PORT SERVER_NAME CA_FILE COUNT
"""

import socket
import ssl
import struct
import sys


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def get_block(path, authority):
    # HPACK: :method GET, :scheme https (static), :path and :authority as literals
    # without indexing.
    block = bytes([0x82, 0x87, 0x04, len(path)]) + path.encode()
    return block + bytes([0x01, len(authority)]) + authority.encode()


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def use_once(sock, authority):
    sock.sendall(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + frame(0x4, 0, 0)
        + frame(0x1, 0x5, 1, get_block("/version", authority))
    )
    while True:
        head = read_exact(sock, 9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        read_exact(sock, length)
        if kind == 0x4 and not flags & 0x1:
            sock.sendall(frame(0x4, 0x1, 0))
        if stream == 1 and flags & 0x1 and kind in (0x0, 0x1):
            return


def main():
    host, port, name, ca, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2"])
    held = []
    for _ in range(count):
        raw = socket.create_connection((host, port))
        tls = context.wrap_socket(raw, server_hostname=name)
        if tls.selected_alpn_protocol() != "h2":
            raise SystemExit("no h2")
        use_once(tls, name)
        held.append(tls)
    print(f"ready {len(held)}", flush=True)
    sys.stdin.read()
    for tls in held:
        tls.close()


if __name__ == "__main__":
    main()
