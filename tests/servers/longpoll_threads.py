"""A blocking HTTP/1.1 server, a thread per connection (Python http.server), for the TLS lens
tests: the backend behind stunnel, and, with CERT and KEY, a TLS server itself (its libssl is
loaded privately, by the dlopen'ed _ssl module, and reads through a socket BIO).

    python3 longpoll_threads.py PORT [CERT KEY]

GET /wait?ms=N answers after N ms (a long poll); POST /echo reads the body (Content-Length)
and answers its length; anything else answers "ok". Keep-alive; no timers of its own.
"""
import http.server
import socketserver
import ssl
import sys
import time
from urllib.parse import parse_qs, urlsplit


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self, text):
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/wait":
            ms = int(parse_qs(url.query).get("ms", ["0"])[0])
            time.sleep(ms / 1000)
            self.answer(f"waited {ms}\n")
        else:
            self.answer("ok\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        received = len(self.rfile.read(length)) if length else 0
        self.answer(f"received {received}\n")

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a connection the guard (or a test client) cut: nothing to report


def main():
    port = int(sys.argv[1])
    server = Server(("127.0.0.1", port), Handler)
    if len(sys.argv) > 3:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
        # The handshake happens in the connection's thread, on its first read.
        server.socket = context.wrap_socket(
            server.socket, server_side=True, do_handshake_on_connect=False
        )
    print(f"listening {port}", flush=True)
    server.serve_forever()


main()
