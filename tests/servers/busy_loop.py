"""An event loop stuck in long work: it accepts every connection and registers it for reading
in epoll (so the guard counts the server as waiting on each client), then never reads any.

A client that sent bytes, or closed, has its bytes or its FIN in the kernel, unread: the
server's turn, not the client's (tests/false_positives.rs). A silent client that stays is the
client's turn (first byte).

usage: busy_loop.py SECONDS   (prints port=N, listens on 127.0.0.1, exits after SECONDS)
"""
import select
import socket
import sys
import time

lifetime = float(sys.argv[1])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", 0))
listener.listen(64)
print(f"port={listener.getsockname()[1]}", flush=True)
loop = select.epoll()
loop.register(listener.fileno(), select.EPOLLIN)
held = []
end = time.monotonic() + lifetime
while time.monotonic() < end:
    for fd, _ in loop.poll(0.05):
        if fd == listener.fileno():
            conn, _ = listener.accept()
            loop.register(conn.fileno(), select.EPOLLIN)
            held.append(conn)
    # The work that keeps the loop from reading: the connections' events are left pending
    # (level-triggered, so each poll returns at once while a connection is readable).
    time.sleep(0.05)
