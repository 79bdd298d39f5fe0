/* coop_server: a server rebuilt against include/stallguard.h (the optional cooperation API).
 *
 * One thread per connection, blocking I/O, one request per connection:
 *   GET /exempt    the handler exempts its connection, then waits up to 3 s for the client to
 *                  send "go" (the client's turn, longer than a short idle timer), then answers
 *                  "exempt <rc>" — with the guard the exemption keeps it alive;
 *                  `GET /exempt?ms=N` waits up to N ms instead (a stuck, exempt connection);
 *   GET /deadline  the handler gives itself 1 s (stallguard_set_deadline), then thinks for 3 s
 *                  before answering — with the guard the connection is cut at 1 s;
 *   GET /counters  answers "tracked=N reaped=M" from stallguard_counters, or "unavailable"
 *                  without the guard.
 * Without the library every call fails with ENOSYS and the server behaves as plain code.
 *
 * usage: coop_server PORT
 */
#define _GNU_SOURCE
#include "stallguard.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void answer(int fd, const char *body)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n%s", strlen(body), body);
    if (n > 0)
        (void)!write(fd, buf, (size_t)n);
}

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char req[4096];
    size_t len = 0;
    while (len < sizeof(req) - 1 && !memmem(req, len, "\r\n\r\n", 4)) {
        ssize_t n = read(fd, req + len, sizeof(req) - 1 - len);
        if (n <= 0)
            goto out;
        len += (size_t)n;
    }
    req[len] = 0;
    char body[256];
    if (!strncmp(req, "GET /exempt ", 12) || !strncmp(req, "GET /exempt?ms=", 15)) {
        int wait_ms = req[11] == '?' ? atoi(req + 15) : 3000;
        int rc = stallguard_try_exempt(fd);
        char go[8];
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int ready = poll(&p, 1, wait_ms) > 0 && read(fd, go, sizeof(go)) > 0;
        snprintf(body, sizeof(body), "exempt %d %s\n", rc, ready ? "go" : "timeout");
    } else if (!strncmp(req, "GET /deadline ", 14)) {
        stallguard_try_set_deadline(fd, 1000);
        sleep(3); /* the server's turn: never charged by the timers, but bound by the deadline */
        snprintf(body, sizeof(body), "thought\n");
    } else if (!strncmp(req, "GET /counters ", 14)) {
        struct stallguard_counters c;
        if (stallguard_try_counters(&c) == 0)
            snprintf(body, sizeof(body), "tracked=%llu reaped=%llu\n", (unsigned long long)c.tracked,
                     (unsigned long long)c.reaped_total);
        else
            snprintf(body, sizeof(body), "unavailable %s\n", errno == ENOSYS ? "ENOSYS" : "error");
    } else {
        snprintf(body, sizeof(body), "ok\n");
    }
    answer(fd, body);
out:
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: coop_server PORT\n");
        return 2;
    }
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((unsigned short)atoi(argv[1]))};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sin);
    if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(lfd, 64) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sin, &sl) < 0) {
        perror("coop_server");
        return 1;
    }
    printf("port=%u\n", ntohs(sin.sin_port));
    fflush(stdout);
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_t t;
        if (pthread_create(&t, NULL, serve, (void *)(intptr_t)fd) == 0)
            pthread_detach(t);
        else
            close(fd);
    }
}
