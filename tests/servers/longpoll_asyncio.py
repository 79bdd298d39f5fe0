"""An event-loop HTTP/1.1 server (Python asyncio.start_server) for the lens tests.

    python3 longpoll_asyncio.py PORT [CERT KEY]

GET /wait?ms=N answers after N ms (a long poll); POST /echo reads the body (Content-Length or
chunked) and answers its length; anything else answers "ok". Keep-alive; no timers of its own.
"""
import asyncio
import ssl
import sys
from urllib.parse import parse_qs, urlsplit


async def read_body(reader, headers):
    if headers.get("transfer-encoding", "").lower().endswith("chunked"):
        total = 0
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":
                    pass
                return total
            total += len(await reader.readexactly(size))
            await reader.readexactly(2)
    length = int(headers.get("content-length", "0"))
    return len(await reader.readexactly(length)) if length else 0


async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            if headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await writer.drain()
            received = await read_body(reader, headers)
            url = urlsplit(target)
            if url.path == "/wait":
                ms = int(parse_qs(url.query).get("ms", ["0"])[0])
                await asyncio.sleep(ms / 1000)
                text = f"waited {ms}\n"
            elif url.path == "/echo":
                text = f"received {received}\n"
            else:
                text = "ok\n"
            body = text.encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    port = int(sys.argv[1])
    context = None
    if len(sys.argv) > 3:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(sys.argv[2], sys.argv[3])
    server = await asyncio.start_server(serve, "127.0.0.1", port, ssl=context)
    print(f"listening {port}", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
