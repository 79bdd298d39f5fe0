/* copycost: what one kernel query costs the watcher now that it has a fd table of its own.
 *
 * A loopback TCP connection; the median ns of
 *   direct      getsockopt(TCP_INFO) on the program's own fd number (the watcher before
 *               issue 13, sharing the table)
 *   copy        pidfd_getfd(pidfd_open(getpid()) once, fd) + getsockopt(SO_COOKIE) (the check)
 *               + getsockopt(TCP_INFO) + close(copy): one query through a copy
 *   act         pidfd_open(tid, PIDFD_THREAD) + pidfd_getfd + SO_COOKIE + close + close: a
 *               copy through a thread's table (split tables), per act
 * measured from a thread that left the table (unshare(CLONE_FILES)), as the watcher.
 * usage: copycost [--calls N]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif
#define PIDFD_THREAD 0200

static int conn, calls = 20000;

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void query(int fd)
{
    struct tcp_info ti;
    socklen_t l = sizeof(ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &l))
        exit(3);
}

static uint64_t cookie(int fd)
{
    uint64_t c = 0;
    socklen_t l = sizeof(c);
    getsockopt(fd, SOL_SOCKET, SO_COOKIE, &c, &l);
    return c;
}

#define ROUNDS 41
static void report(const char *name, double *v)
{
    qsort(v, ROUNDS, sizeof(double), cmp);
    printf("query %s ns %.0f min %.0f\n", name, v[ROUNDS / 2], v[0]);
}

static pid_t main_tid;

static void *watcher(void *arg)
{
    (void)arg;
    int direct = conn; /* still shared: measure the direct query first */
    double d[ROUNDS], c[ROUNDS], a[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < calls; i++)
            query(direct);
        d[r] = (now_ns() - t0) / calls;
    }
    uint64_t want = cookie(conn);
    if (unshare(CLONE_FILES))
        exit(3);
    int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
    if (pidfd < 0)
        exit(3);
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now_ns();
        for (int i = 0; i < calls; i++) {
            int copy = (int)syscall(SYS_pidfd_getfd, pidfd, conn, 0);
            if (copy < 0 || cookie(copy) != want)
                exit(4);
            query(copy);
            close(copy);
        }
        c[r] = (now_ns() - t0) / calls;
        t0 = now_ns();
        for (int i = 0; i < calls; i++) {
            int th = (int)syscall(SYS_pidfd_open, main_tid, PIDFD_THREAD);
            int copy = (int)syscall(SYS_pidfd_getfd, th, conn, 0);
            if (th < 0 || copy < 0 || cookie(copy) != want)
                exit(5);
            close(copy);
            close(th);
        }
        a[r] = (now_ns() - t0) / calls;
    }
    report("direct", d);
    report("copy", c);
    report("act_thread", a);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc > 2 && !strcmp(argv[1], "--calls"))
        calls = atoi(argv[2]);
    main_tid = gettid();
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&sa, &sl))
        return 1;
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(c, (struct sockaddr *)&sa, sizeof(sa)))
        return 1;
    conn = accept(l, NULL, NULL);
    pthread_t t;
    pthread_create(&t, NULL, watcher, NULL);
    pthread_join(t, NULL);
    return 0;
}
