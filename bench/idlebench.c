/* idlebench: N idle tracked connections, for the watcher's cost per tick and the memory the
 * guard adds per connection.
 *
 *   idlebench server N [--epoll] [--max-seconds S]
 *       listens on 127.0.0.1 (ephemeral port), prints "port P", accepts N connections with
 *       libc accept() (tracked when libstallguard.so is preloaded), prints "ready N" and then
 *       holds them without reading. --epoll registers each one for EPOLLIN in an epoll set
 *       and sits in epoll_wait, as an event-loop server between requests (the shim then
 *       counts the connection as waiting on its client).
 *   idlebench client PORT N [--max-seconds S]
 *       opens N connections to 127.0.0.1:PORT (from 16 source addresses 127.0.0.2-17),
 *       prints "connected N", sends nothing and
 *       holds them.
 *
 * Both raise RLIMIT_NOFILE to what N needs (within the hard limit) and exit by themselves
 * after --max-seconds (default 300), so a forgotten process cannot outlive a run for long.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "idlebench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static void raise_nofile(long n)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("getrlimit");
    rlim_t want = (rlim_t)n + 64;
    if (rl.rlim_cur >= want)
        return;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want) {
        /* Privileged (the benchmark runs as root): raise the hard limit too. */
        struct rlimit both = {.rlim_cur = want, .rlim_max = want};
        if (setrlimit(RLIMIT_NOFILE, &both) == 0)
            return;
        fprintf(stderr, "idlebench: %ld connections need %lu fds, hard limit is %lu\n", n,
                (unsigned long)want, (unsigned long)rl.rlim_max);
        exit(1);
    }
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        die("setrlimit");
}

static _Noreturn void server(long n, int use_epoll)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 4096) < 0 ||
        getsockname(lfd, (struct sockaddr *)&a, &len) < 0)
        die("listen");
    printf("port %d\n", ntohs(a.sin_port));
    fflush(stdout);
    int ep = -1;
    if (use_epoll && (ep = epoll_create1(0)) < 0)
        die("epoll_create1");
    for (long i = 0; i < n; i++) {
        int c = accept(lfd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR)
                continue;
            die("accept");
        }
        if (ep >= 0) {
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev) < 0)
                die("epoll_ctl");
        }
    }
    printf("ready %ld\n", n);
    fflush(stdout);
    if (ep >= 0) {
        struct epoll_event evs[64];
        for (;;) {
            int k = epoll_wait(ep, evs, 64, -1);
            if (k > 0) {
                /* A client went away or sent something: stop watching it, do not spin. */
                for (int i = 0; i < k; i++)
                    epoll_ctl(ep, EPOLL_CTL_DEL, evs[i].data.fd, NULL);
            }
        }
    }
    for (;;)
        pause();
}

static _Noreturn void client(int port, long n)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                            .sin_port = htons((unsigned short)port)};
    for (long i = 0; i < n; i++) {
        int c = socket(AF_INET, SOCK_STREAM, 0);
        /* Several 127.0.0.x sources: one address has ~28k ephemeral ports. */
        struct sockaddr_in src = {.sin_family = AF_INET,
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + i % 16)};
        if (c < 0 || bind(c, (struct sockaddr *)&src, sizeof src) < 0 ||
            connect(c, (struct sockaddr *)&a, sizeof a) < 0)
            die("connect");
    }
    printf("connected %ld\n", n);
    fflush(stdout);
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    if (argc < 3)
        goto usage;
    int is_server = !strcmp(argv[1], "server");
    int is_client = !strcmp(argv[1], "client");
    int use_epoll = 0, max_seconds = 300, pos = 0;
    long args[2] = {0, 0};
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--epoll"))
            use_epoll = 1;
        else if (!strcmp(argv[i], "--max-seconds") && i + 1 < argc)
            max_seconds = atoi(argv[++i]);
        else if (pos < 2)
            args[pos++] = atol(argv[i]);
        else
            goto usage;
    }
    if ((is_server && pos != 1) || (is_client && pos != 2) || (!is_server && !is_client))
        goto usage;
    long n = is_server ? args[0] : args[1];
    if (n < 1 || max_seconds < 1)
        goto usage;
    raise_nofile(n);
    signal(SIGALRM, SIG_DFL);
    alarm((unsigned)max_seconds); /* bounded: dies of SIGALRM at the latest */
    if (is_server)
        server(n, use_epoll);
    client((int)args[0], n);
usage:
    fprintf(stderr, "usage: idlebench server N [--epoll] [--max-seconds S]\n"
                    "       idlebench client PORT N [--max-seconds S]\n");
    return 2;
}
