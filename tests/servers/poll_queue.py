"""A poll()/select() server that hands complete requests to a busy worker (issue 11, item 5).

The main thread waits in poll() (or select()) on the listener and every connection still
reading its request, with non-blocking reads drained until EAGAIN. Once a connection's request
is complete (a blank line), it leaves the poll set and is queued for the only worker, which
holds each request HOLD seconds before answering. While queued, the server does not wait on
that client: its next poll call without the fd must end the wait. A slowloris stays in the
poll set and is still the client's turn. A request whose first bytes are "HANDOFF" leaves the
poll set at once, incomplete, for a reader thread that reads the rest with blocking recv():
that thread waits on the client (a slowloris there is still cut), whatever the poller does.

usage: poll_queue.py poll|select HOLD_SECONDS   (prints port=N, listens on 127.0.0.1)
"""
import errno
import queue
import select
import socket
import sys
import threading
import time

mode, hold = sys.argv[1], float(sys.argv[2])
work = queue.Queue()


def worker():
    while True:
        conn = work.get()
        time.sleep(hold)  # busy: answers after HOLD seconds, never reading more
        try:
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nqueued")
        except OSError:
            pass
        conn.close()


handoff = queue.Queue()


def reader():
    while True:
        conn, got = handoff.get()
        conn.setblocking(True)
        while b"\r\n\r\n" not in got:
            try:
                b = conn.recv(4096)
            except OSError:
                b = b""
            if not b:
                break
            got += b
        if b"\r\n\r\n" in got:
            try:
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nhanded")
            except OSError:
                pass
        conn.close()


threading.Thread(target=worker, daemon=True).start()
threading.Thread(target=reader, daemon=True).start()
lsn = socket.socket()
lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsn.bind(("127.0.0.1", 0))
lsn.listen(64)
lsn.setblocking(False)
print(f"port={lsn.getsockname()[1]}", flush=True)

reading = {}  # fd -> (socket, bytes so far)


def wait_readable():
    """One poll/select call over the listener and the connections still reading."""
    fds = [lsn.fileno(), *reading]
    if mode == "poll":
        p = select.poll()
        for fd in fds:
            p.register(fd, select.POLLIN)
        return [fd for fd, _ in p.poll(500)]
    return select.select(fds, [], [], 0.5)[0]


while True:
    for fd in wait_readable():
        if fd == lsn.fileno():
            try:
                c, _ = lsn.accept()
            except BlockingIOError:
                continue
            c.setblocking(False)
            reading[c.fileno()] = (c, b"")
            continue
        c, got = reading[fd]
        closed = False
        while True:  # drain until EAGAIN, as non-blocking servers do
            try:
                b = c.recv(4096)
            except BlockingIOError:
                break
            except OSError:
                closed = True
                break
            if not b:
                closed = True
                break
            got += b
        if closed:
            del reading[fd]
            c.close()
        elif got.startswith(b"HANDOFF"):
            del reading[fd]  # out of the poll set, incomplete: the reader thread takes it
            handoff.put((c, got))
        elif b"\r\n\r\n" in got:
            del reading[fd]  # the request is complete: out of the poll set, to the worker
            work.put(c)
        else:
            reading[fd] = (c, got)
