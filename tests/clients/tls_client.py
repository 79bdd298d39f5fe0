"""TLS clients for tests/tls.rs, legitimate and attacking, on loopback. One per run:

    python3 tls_client.py MODE PORT BOUND_SECS [ARG]

prints one logfmt line: `port=` the client port, `cut=` seconds from connect until the server
closed the connection (`none`: not within BOUND_SECS), `took=` seconds, `answers=` the answer
bodies joined by `|` (spaces as `_`), and `error=` what went wrong (`none`).

MODE:
  get PATH          one request; its answer.
  keepalive PATH    two requests on one connection, 2 s apart.
  answered_then_silent   one request answered, then nothing: cut by idle (timed from the answer).
  slowloris         request line and Host, then a header byte a second (each its own record).
  slowbody          POST headers with Content-Length 1000, then a body byte a second.
  slowpost RATE     a legitimate POST of 8*RATE bytes at RATE bytes a second; its answer.
  silent            TCP connect, no handshake, nothing.
  midhandshake      sends a ClientHello, then nothing (the handshake never completes).
"""
import select
import socket
import ssl
import sys
import time


def context():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def closed(sock, wait):
    """True once the server closed (EOF, reset, a TLS alert); waits up to `wait` seconds."""
    r, _, _ = select.select([sock], [], [], wait)
    if not r:
        return False
    try:
        data = sock.recv(4096)
    except (ssl.SSLWantReadError, socket.timeout, BlockingIOError):
        return False  # a record with no application data (a TLS 1.3 ticket)
    except (ssl.SSLError, OSError):
        return True
    return data == b""


def read_answer(sock, deadline):
    """One HTTP/1.1 response with Content-Length; its body (raises on EOF)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("closed before the answer")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(4096)
        if not chunk:
            raise EOFError("closed inside the answer")
        body += chunk
    return body.decode()


def drip(sock, t0, bound, opening, trickle):
    sock.sendall(opening)
    i = 0
    next_byte = t0 + 1
    while time.monotonic() - t0 < bound:
        if closed(sock, 0.05):
            return time.monotonic() - t0
        if time.monotonic() >= next_byte:
            try:
                sock.sendall(trickle[i % len(trickle) : i % len(trickle) + 1])
            except OSError:
                return time.monotonic() - t0
            i += 1
            next_byte += 1
    return None


def main():
    mode, port, bound = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    arg = sys.argv[4] if len(sys.argv) > 4 else None
    t0 = time.monotonic()
    raw = socket.create_connection(("127.0.0.1", port))
    out = {"port": raw.getsockname()[1], "cut": None, "answers": [], "took": None, "error": None}
    try:
        run(mode, arg, bound, t0, raw, out)
    except (OSError, EOFError, ssl.SSLError) as e:
        out["error"] = type(e).__name__
    out["took"] = time.monotonic() - t0
    secs = lambda v: "none" if v is None else f"{v:.3f}"
    answers = "|".join(a.strip().replace(" ", "_") for a in out["answers"])
    print(f"port={out['port']} cut={secs(out['cut'])} took={secs(out['took'])} "
          f"answers={answers or 'none'} error={out['error'] or 'none'}", flush=True)


def run(mode, arg, bound, t0, raw, out):
    if mode == "silent":
        while time.monotonic() - t0 < bound and out["cut"] is None:
            if closed(raw, 0.05):
                out["cut"] = time.monotonic() - t0
    elif mode == "midhandshake":
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = context().wrap_bio(incoming, outgoing, server_side=False)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        raw.sendall(outgoing.read())  # the ClientHello; the server's flight is never answered
        while time.monotonic() - t0 < bound and out["cut"] is None:
            r, _, _ = select.select([raw], [], [], 0.05)
            if r:
                try:
                    if raw.recv(65536) == b"":
                        out["cut"] = time.monotonic() - t0
                except OSError:
                    out["cut"] = time.monotonic() - t0
    else:
        sock = context().wrap_socket(raw)
        if mode == "get":
            sock.sendall(f"GET {arg} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            out["answers"].append(read_answer(sock, t0 + bound))
        elif mode == "keepalive":
            for _ in range(2):
                sock.sendall(f"GET {arg} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
                out["answers"].append(read_answer(sock, t0 + bound))
                time.sleep(2)
        elif mode == "answered_then_silent":
            sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            out["answers"].append(read_answer(sock, t0 + bound))
            t1 = time.monotonic()  # timed from the answer
            while time.monotonic() - t1 < bound and out["cut"] is None:
                if closed(sock, 0.05):
                    out["cut"] = time.monotonic() - t1
        elif mode == "slowloris":
            out["cut"] = drip(sock, t0, bound, b"GET / HTTP/1.1\r\nHost: t\r\n", b"X-a: b\r\n")
        elif mode == "slowbody":
            head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n"
            out["cut"] = drip(sock, t0, bound, head, b"b")
        elif mode == "slowpost":
            rate = int(arg)
            total = 8 * rate
            sock.sendall(f"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {total}\r\n\r\n".encode())
            sent = 0
            while sent < total:
                piece = min(rate // 10, total - sent)
                sock.sendall(b"p" * piece)
                sent += piece
                time.sleep(0.1)
            out["answers"].append(read_answer(sock, t0 + bound))
        else:
            raise SystemExit(f"unknown mode {mode}")


main()
