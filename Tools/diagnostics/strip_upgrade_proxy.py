#!/usr/bin/env python3
"""A deliberately broken reverse proxy: forwards HTTP to a backend but drops the Upgrade and
Connection headers, like a misconfigured nginx. Used to test that `kanban doctor` names the cause
and that agents fall back to HTTP long-polling through it.

usage: strip_upgrade_proxy.py LISTEN_PORT BACKEND_PORT   (prints "listening PORT" when ready)
"""
import socket
import sys
import threading


def pump(source, target):
    """Copies bytes until either side closes."""
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def handle(client, backend_port):
    with client:
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = client.recv(4096)
            if not chunk:
                return
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        kept = [l for l in lines if not l.lower().startswith((b"upgrade:", b"connection:"))]
        with socket.create_connection(("127.0.0.1", backend_port), timeout=5) as upstream:
            upstream.settimeout(None)
            # The first request loses its Upgrade and Connection headers; the rest of the
            # connection (a request body, later keep-alive requests) passes unchanged, so plain
            # HTTP (and long-polling) works through it and only WebSocket upgrades break.
            upstream.sendall(b"\r\n".join(kept) + b"\r\n\r\n" + rest)
            upload = threading.Thread(target=pump, args=(client, upstream), daemon=True)
            upload.start()
            pump(upstream, client)
            upload.join(timeout=5)


def main():
    listen_port, backend_port = int(sys.argv[1]), int(sys.argv[2])
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", listen_port))
    server.listen(16)
    print("listening", server.getsockname()[1], flush=True)
    server.settimeout(60)  # stops by itself if nobody uses it
    while True:
        try:
            client, _ = server.accept()
        except socket.timeout:
            return
        threading.Thread(target=handle, args=(client, backend_port), daemon=True).start()


if __name__ == "__main__":
    main()
