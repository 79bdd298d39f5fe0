/* harness.h: helpers shared by the C test harnesses in tests/c/ (header only: each harness
 * stays one file, built with `gcc NAME.c`, also by the sanitizer build of the reliability
 * suite).  Include it after `#define _GNU_SOURCE` and the system headers. */
#ifndef STALLGUARD_HARNESS_H
#define STALLGUARD_HARNESS_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* Monotonic milliseconds. */
static inline long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* read(), retried after EINTR. */
static inline ssize_t read_retry(int fd, void *buf, size_t n)
{
    ssize_t r;
    do
        r = read(fd, buf, n);
    while (r < 0 && errno == EINTR);
    return r;
}

/* Writes all n bytes, retrying after EINTR and short writes.  0, or -1 (errno set when write
 * failed; a write of 0 bytes is a failure too). */
static inline int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = write(fd, c, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

/* The library named by LD_PRELOAD (basename) is mapped into this process. */
static inline int shim_loaded(void)
{
    const char *pre = getenv("LD_PRELOAD");
    if (!pre || !*pre)
        return 0;
    const char *base = strrchr(pre, '/');
    base = base ? base + 1 : pre;
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    if (!f)
        return 0;
    while (!found && fgets(line, sizeof(line), f))
        found = strstr(line, base) != NULL;
    fclose(f);
    return found;
}

/* A connected loopback TCP pair: *srv is the accepted end (tracked by the shim), *cli the
 * connected end (never tracked).  a4flags < 0: accept(), else accept4() with those flags.
 * Returns NULL, or the step that failed ("listener", "connect", "accept") with errno set. */
static inline const char *loopback_pair(int *srv, int *cli, int a4flags)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(l, 4) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) != 0)
        return "listener";
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)) != 0)
        return "connect";
    int s = a4flags < 0 ? accept(l, NULL, NULL) : accept4(l, NULL, NULL, a4flags);
    if (s < 0)
        return "accept";
    close(l);
    *srv = s;
    *cli = c;
    return NULL;
}

#endif
