/* outbound_client: a legacy client with no deadlines, the victim of a stalled upstream.
 *
 * It connects (blocking connect(), no timeout) to PORT on 127.0.0.1, sends one request and
 * reads the answer with blocking read() until EOF. Against an upstream that accepts and never
 * answers, or one that never completes the handshake, it hangs forever on its own; with
 * STALLGUARD_OUTBOUND set it must be released with an error.
 *
 * usage: outbound_client PORT
 * prints: "connect: ok" or "connect: <error>", then "read: eof after N bytes" or
 * "read: <error> after N bytes".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: outbound_client PORT\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        printf("connect: %s\n", strerror(errno));
        return 1;
    }
    printf("connect: ok\n");
    fflush(stdout);
    static const char req[] = "GET / HTTP/1.0\r\n\r\n";
    if (write(fd, req, sizeof(req) - 1) < 0) {
        printf("write: %s\n", strerror(errno));
        return 1;
    }
    char buf[4096];
    unsigned long total = 0;
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n > 0) {
            total += (unsigned long)n;
            continue;
        }
        if (n == 0)
            printf("read: eof after %lu bytes\n", total);
        else
            printf("read: %s after %lu bytes\n", strerror(errno), total);
        return n == 0 ? 0 : 1;
    }
}
