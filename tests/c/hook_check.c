/* hook_check: the shim's hooks must be transparent.
 *
 * Every hooked libc function is called on a connection this process
 * accept()ed (so, under LD_PRELOAD, the shim tracks it) and on plain fds, and
 * its result -- return value, errno, bytes moved, signals raised -- is checked
 * against what libc and the kernel do without the shim.  The program is
 * self-contained: it listens on 127.0.0.1 port 0, connects to itself and
 * accept()s.  One line per check on stdout, `name: ok` or `name: FAIL detail`,
 * then a summary line.  A test runs it with and without LD_PRELOAD and
 * compares the output, so nothing run-dependent (pids, fds, ports, timings)
 * is ever printed.  Exit 0 iff every check passed; 3 if the safety alarm
 * fired (a hook blocked where libc would not have).
 *
 * usage: hook_check
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/select.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define DATA_SIZE  1048583u /* > socket buffers (writers must block); odd on purpose */
#define FILE_SIZE  200003u
#define WAIT_MS    5000     /* upper bound for anything that "happens at once" on loopback */

/* ------------------------------------------------------------------------ */
/* reporting                                                                */

static int checks, failures;
static int in_child; /* setup failures in a forked child must not print */

/* First failure of the current check, or "" while it is still ok. */
static char why[256];

#define EXPECT(cond, ...)                                                     \
    do {                                                                      \
        if (!(cond) && !why[0])                                               \
            snprintf(why, sizeof(why), __VA_ARGS__);                          \
    } while (0)

static void begin(void)
{
    why[0] = 0;
}

static void report(const char *name)
{
    checks++;
    if (why[0]) {
        failures++;
        printf("%s: FAIL %s\n", name, why);
    } else {
        printf("%s: ok\n", name);
    }
    why[0] = 0;
}

/* report() for one variant of a check: `fmt` holds one %s, which `variant` fills. */
static void report_variant(const char *fmt, const char *variant)
{
    char name[64];
    snprintf(name, sizeof(name), fmt, variant);
    report(name);
}

static const char *ename(int e)
{
    const char *n = strerrorname_np(e);
    return n ? n : "E?";
}

/* Setup (not the thing under test) failed: nothing sensible can follow. */
static void die(const char *what)
{
    int e = errno;
    if (in_child)
        _exit(99);
    printf("setup: FAIL %s: %s\n", what, ename(e));
    exit(1);
}

/* ------------------------------------------------------------------------ */
/* data and helpers                                                         */

static unsigned char *data;     /* DATA_SIZE deterministic bytes */
static int tmpfd = -1;          /* unlinked temp file holding data[0..FILE_SIZE) */

#define FNV_INIT 0xcbf29ce484222325ULL

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n--)
        h = (h ^ *b++) * 0x100000001b3ULL;
    return h;
}

static void make_data(void)
{
    data = malloc(DATA_SIZE);
    if (!data)
        die("malloc");
    uint64_t s = 0x5eed00c4ec4ULL;
    for (size_t i = 0; i < DATA_SIZE; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        data[i] = (unsigned char)(s >> 24);
    }
}

static int make_tmpfile(void)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/hook_check.XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        die("mkstemp");
    unlink(path);
    return fd;
}

/* A connected TCP pair: *srv is the accept()ed end (tracked by the shim),
 * *cli the connect()ed end (never tracked).  a4flags < 0: accept(), else
 * accept4() with those flags. */
static void tcp_pair4(int *srv, int *cli, int a4flags)
{
    const char *failed = loopback_pair(srv, cli, a4flags);
    if (failed)
        die(failed);
}

static void tcp_pair(int *srv, int *cli)
{
    tcp_pair4(srv, cli, -1);
}

/* Starts a check on a fresh tracked connection. */
static void begin_pair(int *srv, int *cli)
{
    begin();
    tcp_pair(srv, cli);
}

/* A fresh tracked connection and a pipe. */
static void tcp_pair_pipe(int *srv, int *cli, int p[2])
{
    tcp_pair(srv, cli);
    if (pipe(p) != 0)
        die("pipe");
}

/* Starts a check on a fresh tracked connection and a pipe. */
static void begin_pair_pipe(int *srv, int *cli, int p[2])
{
    begin();
    tcp_pair_pipe(srv, cli, p);
}

static void close_pipe(const int p[2])
{
    close(p[0]);
    close(p[1]);
}

/* Ends a check: closes its connection and reports it. */
static void end_pair(int srv, int cli, const char *name)
{
    close(srv);
    close(cli);
    report(name);
}

/* Close with SO_LINGER {1, 0}: the kernel sends RST instead of FIN. */
static void rst_close(int fd)
{
    struct linger lg = {1, 0};
    if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) != 0)
        die("SO_LINGER");
    close(fd);
}

/* Waits until fd reports POLLHUP (the RST arrived).  Returns 1 if it did. */
static int wait_hup(int fd)
{
    for (int i = 0; i < WAIT_MS / 10; i++) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 10) > 0 && (p.revents & POLLHUP))
            return 1;
    }
    return 0;
}

/* Reads up to n bytes (fewer only on EOF, error or WAIT_MS of silence). */
static size_t recv_exact(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd p = {fd, POLLIN, 0};
        int pr = poll(&p, 1, WAIT_MS);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            break;
        ssize_t r = read_retry(fd, (char *)buf + got, n - got);
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    return got;
}

/* Nothing (more) is waiting to be read on fd. */
static int drained(int fd)
{
    char b;
    return recv(fd, &b, 1, MSG_DONTWAIT) == -1 && errno == EAGAIN;
}

/* The peer sees EOF within WAIT_MS. */
static int sees_eof(int fd)
{
    char b[64];
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, WAIT_MS) == 1 && read(fd, b, sizeof(b)) == 0;
}

static int is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static int cloexec(int fd)
{
    int f = fcntl(fd, F_GETFD);
    return f >= 0 && (f & FD_CLOEXEC);
}

/* Background reader: reads fd to EOF, hashing the stream. */
struct drain {
    pthread_t t;
    int fd;
    size_t total;
    uint64_t hash;
    int err;
};

static void *drain_main(void *arg)
{
    struct drain *d = arg;
    unsigned char buf[65536];
    d->hash = FNV_INIT;
    for (;;) {
        ssize_t r = read(d->fd, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            d->err = errno;
            break;
        }
        if (r == 0)
            break;
        d->hash = fnv(d->hash, buf, (size_t)r);
        d->total += (size_t)r;
    }
    return NULL;
}

static void drain_start(struct drain *d, int fd)
{
    memset(d, 0, sizeof(*d));
    d->fd = fd;
    if (pthread_create(&d->t, NULL, drain_main, d) != 0)
        die("pthread_create");
}

/* Background writer: writes p[0..n) in chunks (optionally pausing), then
 * shuts its side down for writing. */
struct feed {
    pthread_t t;
    int fd;
    const unsigned char *p;
    size_t n, chunk;
    int pause_ms;
    int err;
};

static void *feed_main(void *arg)
{
    struct feed *f = arg;
    for (size_t off = 0; off < f->n;) {
        size_t k = f->n - off < f->chunk ? f->n - off : f->chunk;
        if (f->pause_ms && off) {
            struct timespec ts = {0, f->pause_ms * 1000000L};
            nanosleep(&ts, NULL);
        }
        if (write_all(f->fd, f->p + off, k) != 0) {
            f->err = errno;
            return NULL;
        }
        off += k;
    }
    shutdown(f->fd, SHUT_WR);
    return NULL;
}

static void feed_start(struct feed *f, int fd, const unsigned char *p, size_t n,
                       size_t chunk, int pause_ms)
{
    memset(f, 0, sizeof(*f));
    f->fd = fd;
    f->p = p;
    f->n = n;
    f->chunk = chunk;
    f->pause_ms = pause_ms;
    if (pthread_create(&f->t, NULL, feed_main, f) != 0)
        die("pthread_create");
}

/* ------------------------------------------------------------------------ */
/* the hooked write and read families, by index                              */

enum { W_WRITE, W_WRITEV, W_SEND, W_SENDTO, W_SENDMSG, W_SENDFILE, W_COUNT };
static const char *const wname[W_COUNT] = {"write", "writev", "send",
                                           "sendto", "sendmsg", "sendfile"};

/* Writes p[0..n) with one call of the given kind.  flags only apply to the
 * socket calls; sendfile sends the same bytes out of the temp file (p must
 * then lie in data[0..FILE_SIZE)). */
static ssize_t do_write(int kind, int fd, const unsigned char *p, size_t n, int flags)
{
    struct iovec iov[3];
    struct msghdr m;
    off_t off = p - data;
    switch (kind) {
    case W_WRITE:
        return write(fd, p, n);
    case W_WRITEV: /* includes an empty iovec: it must not confuse anyone */
        iov[0].iov_base = (void *)p;
        iov[0].iov_len = n / 3;
        iov[1].iov_base = (void *)p;
        iov[1].iov_len = 0;
        iov[2].iov_base = (void *)(p + n / 3);
        iov[2].iov_len = n - n / 3;
        return writev(fd, iov, 3);
    case W_SEND:
        return send(fd, p, n, flags);
    case W_SENDTO:
        return sendto(fd, p, n, flags, NULL, 0);
    case W_SENDMSG:
        memset(&m, 0, sizeof(m));
        iov[0].iov_base = (void *)p;
        iov[0].iov_len = n / 2;
        iov[1].iov_base = (void *)(p + n / 2);
        iov[1].iov_len = n - n / 2;
        m.msg_iov = iov;
        m.msg_iovlen = 2;
        return sendmsg(fd, &m, flags);
    case W_SENDFILE:
        return sendfile(fd, tmpfd, &off, n);
    }
    return -2;
}

enum { R_READ, R_READV, R_RECV, R_RECVFROM, R_RECVMSG, R_COUNT };
static const char *const rname[R_COUNT] = {"read", "readv", "recv", "recvfrom", "recvmsg"};

/* A fixed-size array of known size: with _FORTIFY_SOURCE and a variable
 * length, read/recv/recvfrom become __read_chk/__recv_chk/__recvfrom_chk,
 * which the shim hooks separately. */
static unsigned char rbuf[8192];

/* One read call of the given kind into rbuf[0..n), n <= sizeof(rbuf).  Not
 * inlined and n not clamped here: if the compiler could prove n fits, it
 * would call plain read/recv/recvfrom instead of the _chk variants. */
static __attribute__((noinline)) ssize_t do_read(int kind, int fd, size_t n, int flags)
{
    struct iovec iov[3];
    struct msghdr m;
    switch (kind) {
    case R_READ:
        return read(fd, rbuf, n);
    case R_READV:
        iov[0].iov_base = rbuf;
        iov[0].iov_len = n / 3;
        iov[1].iov_base = rbuf;
        iov[1].iov_len = 0;
        iov[2].iov_base = rbuf + n / 3;
        iov[2].iov_len = n - n / 3;
        return readv(fd, iov, 3);
    case R_RECV:
        return recv(fd, rbuf, n, flags);
    case R_RECVFROM:
        return recvfrom(fd, rbuf, n, flags, NULL, NULL);
    case R_RECVMSG:
        memset(&m, 0, sizeof(m));
        iov[0].iov_base = rbuf;
        iov[0].iov_len = n / 2;
        iov[1].iov_base = rbuf + n / 2;
        iov[1].iov_len = n - n / 2;
        m.msg_iov = iov;
        m.msg_iovlen = 2;
        return recvmsg(fd, &m, flags);
    }
    return -2;
}

/* ------------------------------------------------------------------------ */
/* 1. errno exactly as libc sets it                                          */

/* A server reading non-blocking (apache, nginx...) relies on -1/EAGAIN to go
 * back to its event loop; anything else is a dropped connection. */
static void check_errno_eagain(void)
{
    int srv, cli;
    tcp_pair(&srv, &cli);
    int fl = fcntl(srv, F_GETFL);
    if (fl < 0 || fcntl(srv, F_SETFL, fl | O_NONBLOCK) != 0)
        die("O_NONBLOCK");
    for (int k = 0; k < R_COUNT; k++) {
        begin();
        errno = 0;
        ssize_t r = do_read(k, srv, 100, 0);
        EXPECT(r == -1 && errno == EAGAIN, "%s on an empty non-blocking socket: %zd/%s",
               rname[k], r, ename(errno));
        report_variant("errno_%s_eagain", rname[k]);
    }

    /* MSG_DONTWAIT on a blocking socket: same EAGAIN, and the socket stays
     * usable afterwards. */
    begin();
    fcntl(srv, F_SETFL, fl);
    for (int k = R_RECV; k <= R_RECVMSG; k++) {
        errno = 0;
        ssize_t r = do_read(k, srv, 100, MSG_DONTWAIT);
        EXPECT(r == -1 && errno == EAGAIN, "%s(MSG_DONTWAIT): %zd/%s", rname[k], r,
               ename(errno));
    }
    EXPECT(write_all(cli, "abc", 3) == 0, "peer write");
    char b[8] = {0};
    EXPECT(recv_exact(srv, b, 3) == 3 && !memcmp(b, "abc", 3), "socket unusable after EAGAIN");
    report("errno_dontwait_eagain");

    /* SO_RCVTIMEO: a blocking read that times out fails with EAGAIN. */
    begin();
    struct timeval tv = {0, 50000};
    if (setsockopt(srv, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0)
        die("SO_RCVTIMEO");
    errno = 0;
    ssize_t r = read(srv, b, sizeof(b));
    EXPECT(r == -1 && errno == EAGAIN, "read past SO_RCVTIMEO: %zd/%s", r, ename(errno));
    report("errno_rcvtimeo_eagain");
    close(srv);
    close(cli);
}

/* A closed fd (tracked a moment ago, or plain) must give EBADF: a shim that
 * still believed the number named a connection would answer differently. */
static void check_errno_ebadf(void)
{
    int srv, cli;
    begin_pair(&srv, &cli);
    EXPECT(close(srv) == 0, "close of the accepted socket: %s", ename(errno));
    char b[16];
    struct iovec iov = {b, sizeof(b)};
    struct msghdr m;
    memset(&m, 0, sizeof(m));
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    ssize_t r;
#define EBADF_CALL(call)                                                      \
    do {                                                                      \
        errno = 0;                                                            \
        r = (call);                                                           \
        EXPECT(r == -1 && errno == EBADF, "%s: %zd/%s", #call, r, ename(errno)); \
    } while (0)
    EBADF_CALL(read(srv, b, sizeof(b)));
    EBADF_CALL(readv(srv, &iov, 1));
    EBADF_CALL(recv(srv, b, sizeof(b), 0));
    EBADF_CALL(recvfrom(srv, b, sizeof(b), 0, NULL, NULL));
    EBADF_CALL(recvmsg(srv, &m, 0));
    EBADF_CALL(write(srv, b, sizeof(b)));
    EBADF_CALL(writev(srv, &iov, 1));
    EBADF_CALL(send(srv, b, sizeof(b), 0));
    EBADF_CALL(sendto(srv, b, sizeof(b), 0, NULL, 0));
    EBADF_CALL(sendmsg(srv, &m, 0));
    EBADF_CALL(shutdown(srv, SHUT_RDWR));
    EBADF_CALL(close(srv));
    report("errno_closed_socket_ebadf");
    close(cli);

    begin();
    int p[2];
    if (pipe(p) != 0)
        die("pipe");
    close_pipe(p);
    EBADF_CALL(read(p[0], b, sizeof(b)));
    EBADF_CALL(write(p[1], b, sizeof(b)));
    EBADF_CALL(read(-1, b, sizeof(b)));
    EBADF_CALL(write(-7, b, sizeof(b)));
    /* beyond any fd table the shim may keep */
    EBADF_CALL(read(1 << 22, b, sizeof(b)));
    EBADF_CALL(write(1 << 22, b, sizeof(b)));
    EBADF_CALL(close(-1));
    EBADF_CALL(close(1 << 22));
    report("errno_plain_ebadf");
#undef EBADF_CALL
}

/* send/recv on something that is not a socket: ENOTSOCK from the kernel, not
 * something the shim made up. */
static void check_errno_notsock(void)
{
    begin();
    int p[2];
    if (pipe(p) != 0)
        die("pipe");
    char b[4] = "xyz";
    errno = 0;
    ssize_t r = send(p[1], b, 3, 0);
    EXPECT(r == -1 && errno == ENOTSOCK, "send on a pipe: %zd/%s", r, ename(errno));
    errno = 0;
    r = recv(p[0], b, 3, MSG_DONTWAIT);
    EXPECT(r == -1 && errno == ENOTSOCK, "recv on a pipe: %zd/%s", r, ename(errno));
    errno = 0;
    r = accept(p[0], NULL, NULL);
    EXPECT(r == -1 && errno == ENOTSOCK, "accept on a pipe: %zd/%s", r, ename(errno));
    close_pipe(p);
    report("errno_notsock");
}

/* A write to a connection the peer reset: -1 with EPIPE or ECONNRESET
 * (SIGPIPE is ignored here), for every write function, twice (the first
 * write reports the RST, the second finds the socket dead). */
static void check_errno_rst(void)
{
    for (int k = 0; k < W_COUNT; k++) {
        int srv, cli;
        begin_pair(&srv, &cli);
        rst_close(cli);
        EXPECT(wait_hup(srv), "RST never arrived");
        for (int i = 0; i < 2; i++) {
            errno = 0;
            ssize_t r = do_write(k, srv, data, 100, 0);
            EXPECT(r == -1 && (errno == EPIPE || errno == ECONNRESET),
                   "%s #%d after RST: %zd/%s", wname[k], i + 1, r, ename(errno));
        }
        close(srv);
        report_variant("errno_rst_%s", wname[k]);
    }

    /* read after RST: the error first, then EOF. */
    int srv, cli;
    begin_pair(&srv, &cli);
    rst_close(cli);
    EXPECT(wait_hup(srv), "RST never arrived");
    char b[8];
    errno = 0;
    ssize_t r = read(srv, b, sizeof(b));
    EXPECT(r == -1 && errno == ECONNRESET, "read #1 after RST: %zd/%s", r, ename(errno));
    errno = 0;
    r = read(srv, b, sizeof(b));
    EXPECT(r == 0, "read #2 after RST: %zd/%s", r, ename(errno));
    close(srv);
    report("errno_rst_read");

    /* Peer closed normally (FIN): writing still succeeds once, the peer's
     * kernel answers with RST, and the next write fails. */
    begin();
    tcp_pair(&srv, &cli);
    close(cli);
    struct pollfd p = {srv, POLLIN, 0};
    EXPECT(poll(&p, 1, WAIT_MS) == 1, "FIN never arrived");
    r = write(srv, "x", 1);
    EXPECT(r == 1, "write after FIN: %zd/%s", r, ename(errno));
    EXPECT(wait_hup(srv), "RST never arrived");
    errno = 0;
    r = write(srv, "x", 1);
    EXPECT(r == -1 && (errno == EPIPE || errno == ECONNRESET),
           "write after FIN+RST: %zd/%s", r, ename(errno));
    close(srv);
    report("errno_fin_then_write");
}

/* accept on things that are not listening sockets: the shim's accept hook
 * must pass the error through untouched (and track nothing). */
static void check_errno_accept(void)
{
    begin();
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    errno = 0;
    int r = accept(s, NULL, NULL);
    EXPECT(r == -1 && errno == EINVAL, "accept, not listening: %d/%s", r, ename(errno));
    errno = 0;
    r = accept4(s, NULL, NULL, SOCK_CLOEXEC);
    EXPECT(r == -1 && errno == EINVAL, "accept4, not listening: %d/%s", r, ename(errno));
    close(s);
    errno = 0;
    r = accept(s, NULL, NULL);
    EXPECT(r == -1 && errno == EBADF, "accept on a closed fd: %d/%s", r, ename(errno));

    /* a non-blocking listener with nothing pending */
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(l, 4) != 0)
        die("listener");
    errno = 0;
    r = accept4(l, NULL, NULL, SOCK_NONBLOCK);
    EXPECT(r == -1 && errno == EAGAIN, "accept4 with nothing pending: %d/%s", r, ename(errno));
    errno = 0;
    r = accept4(l, NULL, NULL, 0x40000000);
    EXPECT(r == -1 && errno == EINVAL, "accept4 with bad flags: %d/%s", r, ename(errno));
    close(l);
    report("errno_accept");
}

/* close/dup2/dup3/dup/fcntl(F_DUPFD*) with invalid arguments. */
static void check_errno_dup(void)
{
    int srv, cli;
    begin_pair(&srv, &cli);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("getrlimit");
    int lim = rl.rlim_cur > (1 << 24) ? (1 << 24) : (int)rl.rlim_cur;
    int r;
#define ERR_CALL(call, e)                                                     \
    do {                                                                      \
        errno = 0;                                                            \
        r = (call);                                                           \
        EXPECT(r == -1 && errno == (e), "%s: %d/%s", #call, r, ename(errno)); \
    } while (0)
    ERR_CALL(close(-1), EBADF);
    ERR_CALL(dup(-1), EBADF);
    ERR_CALL(dup2(srv, -1), EBADF);
    ERR_CALL(dup2(-1, srv), EBADF);
    ERR_CALL(dup2(srv, lim), EBADF);
    ERR_CALL(dup3(srv, srv, 0), EINVAL);
    ERR_CALL(dup3(srv, lim, 0), EBADF);
    ERR_CALL(dup3(srv, srv + 1, 0x1234), EINVAL);
    ERR_CALL(fcntl(-1, F_DUPFD_CLOEXEC, 0), EBADF);
    ERR_CALL(fcntl(srv, F_DUPFD, -1), EINVAL);
    ERR_CALL(fcntl(srv, F_DUPFD_CLOEXEC, lim), EINVAL);
#undef ERR_CALL
    /* dup2 onto itself is a no-op that returns the fd */
    r = dup2(srv, srv);
    EXPECT(r == srv, "dup2(fd, fd) returned another fd or %s", ename(errno));
    /* and none of that disturbed the connection (dup2(-1, srv) must not have
     * closed it, for one) */
    EXPECT(write(srv, "ok", 2) == 2, "write after failed dups: %s", ename(errno));
    char b[4];
    EXPECT(recv_exact(cli, b, 2) == 2 && !memcmp(b, "ok", 2), "peer did not get the bytes");
    end_pair(srv, cli, "errno_dup_invalid");
}

/* fcntl is variadic and hooked: F_GETFL/F_SETFL/F_GETFD/F_SETFD must behave. */
static void check_fcntl_flags(void)
{
    begin();
    int srv, cli, srv4, cli4;
    tcp_pair(&srv, &cli);
    tcp_pair4(&srv4, &cli4, SOCK_NONBLOCK | SOCK_CLOEXEC);
    int fl = fcntl(srv, F_GETFL);
    EXPECT(fl >= 0 && (fl & O_ACCMODE) == O_RDWR && !(fl & O_NONBLOCK),
           "F_GETFL of the accepted socket: %#x", (unsigned)fl);
    EXPECT(fcntl(srv, F_GETFD) == 0, "accept() socket has FD_CLOEXEC");
    EXPECT(fcntl(srv, F_SETFL, fl | O_NONBLOCK) == 0, "F_SETFL: %s", ename(errno));
    EXPECT(fcntl(srv, F_GETFL) == (fl | O_NONBLOCK), "O_NONBLOCK not set");
    EXPECT(fcntl(srv, F_SETFL, fl) == 0 && fcntl(srv, F_GETFL) == fl, "O_NONBLOCK not cleared");
    EXPECT(fcntl(srv, F_SETFD, FD_CLOEXEC) == 0 && cloexec(srv), "F_SETFD");
    int fl4 = fcntl(srv4, F_GETFL);
    EXPECT(fl4 >= 0 && (fl4 & O_NONBLOCK), "accept4(SOCK_NONBLOCK) socket is blocking");
    EXPECT(cloexec(srv4), "accept4(SOCK_CLOEXEC) socket lacks FD_CLOEXEC");
    int p[2];
    if (pipe(p) != 0)
        die("pipe");
    EXPECT((fcntl(p[0], F_GETFL) & O_ACCMODE) == O_RDONLY &&
               (fcntl(p[1], F_GETFL) & O_ACCMODE) == O_WRONLY, "pipe F_GETFL");
    close_pipe(p);
    errno = 0;
    int r = fcntl(p[0], F_GETFL);
    EXPECT(r == -1 && errno == EBADF, "F_GETFL on a closed fd: %d/%s", r, ename(errno));
    /* the accept4 connection works non-blocking */
    errno = 0;
    ssize_t n = read(srv4, rbuf, 10);
    EXPECT(n == -1 && errno == EAGAIN, "read on empty accept4(SOCK_NONBLOCK): %zd/%s", n,
           ename(errno));
    EXPECT(write(cli4, "q", 1) == 1 && recv_exact(srv4, rbuf, 1) == 1 && rbuf[0] == 'q',
           "accept4 connection I/O");
    close(srv);
    close(cli);
    close(srv4);
    close(cli4);
    report("fcntl_flags");
}

/* ------------------------------------------------------------------------ */
/* 2. SIGPIPE exactly as the kernel raises it                                */

static volatile sig_atomic_t npipe;

static void on_sigpipe(int sig)
{
    (void)sig;
    npipe++;
}

static void sigpipe_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigpipe;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) != 0)
        die("sigaction");
}

static void sigpipe_ignore(void)
{
    signal(SIGPIPE, SIG_IGN);
}

/* Forks; the child runs fn(arg) and must end by itself.  Returns the wait
 * status, or -1 if the child did not end within 10 s (it is then killed). */
static int run_child(void (*fn)(int), int arg, void (*in_parent)(void))
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        in_child = 1;
        alarm(10);
        fn(arg);
        _exit(0);
    }
    if (in_parent)
        in_parent();
    int st;
    long long end = now_ms() + 10000;
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            return st;
        if (w < 0 && errno != EINTR)
            die("waitpid");
        if (now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
}

static void describe_status(int st, char *out, size_t n)
{
    if (st == -1)
        snprintf(out, n, "child hung");
    else if (WIFSIGNALED(st))
        snprintf(out, n, "child killed by %s", sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?");
    else
        snprintf(out, n, "child exited %d", WEXITSTATUS(st));
}

/* Child: with SIGPIPE at SIG_DFL, write with `kind` to a reset connection
 * until killed.  Exit codes say how it survived. */
static int inherited_srv = -1, inherited_cli = -1;

static void child_write_until_killed(int kind_and_inherit)
{
    int kind = kind_and_inherit & 0xff;
    int srv, cli;
    signal(SIGPIPE, SIG_DFL);
    if (kind_and_inherit & 0x100) {
        srv = inherited_srv;
        close(inherited_cli); /* the parent closes its copy: RST on the last close */
    } else {
        tcp_pair(&srv, &cli);
        rst_close(cli);
    }
    if (!wait_hup(srv))
        _exit(20);
    for (int i = 0; i < 10; i++) {
        errno = 0;
        ssize_t r = do_write(kind, srv, data, 100, 0);
        if (r >= 0)
            _exit(21); /* a write to a reset connection succeeded */
        if (errno == EPIPE)
            _exit(22); /* EPIPE without SIGPIPE: the kernel would have killed us */
        if (errno != ECONNRESET)
            _exit(23);
    }
    _exit(24);
}

static void close_inherited(void)
{
    close(inherited_srv);
    close(inherited_cli);
}

/* A server that leaves SIGPIPE at SIG_DFL dies when it writes to a peer that
 * went away: the shim writes with MSG_NOSIGNAL, so it must raise SIGPIPE
 * itself -- in the right process, even in a forked child. */
static void check_sigpipe_default(void)
{
    for (int k = 0; k < W_COUNT; k++) {
        char st_why[64];
        begin();
        int st = run_child(child_write_until_killed, k, NULL);
        describe_status(st, st_why, sizeof(st_why));
        EXPECT(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGPIPE,
               "%s: %s, expected killed by PIPE", wname[k], st_why);
        report_variant("sigpipe_default_kills_%s", wname[k]);
    }

    /* prefork style: the parent accepted, the child writes. */
    begin();
    tcp_pair(&inherited_srv, &inherited_cli);
    struct linger lg = {1, 0};
    if (setsockopt(inherited_cli, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) != 0)
        die("SO_LINGER");
    char st_why[64];
    int st = run_child(child_write_until_killed, W_WRITE | 0x100, close_inherited);
    describe_status(st, st_why, sizeof(st_why));
    EXPECT(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGPIPE,
           "%s, expected killed by PIPE", st_why);
    report("sigpipe_default_kills_inherited");
}

/* Child: SIG_DFL, but every write says MSG_NOSIGNAL: must survive. */
static void child_nosignal(int unused)
{
    (void)unused;
    signal(SIGPIPE, SIG_DFL);
    int srv, cli;
    tcp_pair(&srv, &cli);
    rst_close(cli);
    if (!wait_hup(srv))
        _exit(20);
    for (int k = W_SEND; k <= W_SENDMSG; k++)
        for (int i = 0; i < 2; i++) {
            errno = 0;
            ssize_t r = do_write(k, srv, data, 100, MSG_NOSIGNAL);
            if (r != -1 || (errno != EPIPE && errno != ECONNRESET))
                _exit(21);
        }
    _exit(0);
}

/* With a handler installed: it runs exactly once per write that fails with
 * EPIPE and never for ECONNRESET -- no signal lost, none invented. */
static void check_sigpipe_handler(void)
{
    sigpipe_handler();
    for (int k = 0; k < W_COUNT; k++) {
        int srv, cli;
        begin_pair(&srv, &cli);
        rst_close(cli);
        EXPECT(wait_hup(srv), "RST never arrived");
        int epipes = 0;
        for (int i = 0; i < 3; i++) {
            int before = npipe;
            errno = 0;
            ssize_t r = do_write(k, srv, data, 100, 0);
            int e = errno, got = npipe - before, want = e == EPIPE;
            EXPECT(r == -1 && (e == EPIPE || e == ECONNRESET), "%s #%d: %zd/%s", wname[k],
                   i + 1, r, ename(e));
            EXPECT(got == want, "%s #%d failed with %s and ran the handler %d times",
                   wname[k], i + 1, ename(e), got);
            epipes += e == EPIPE;
        }
        EXPECT(epipes >= 2, "%s: only %d EPIPE", wname[k], epipes);
        close(srv);
        report_variant("sigpipe_handler_%s", wname[k]);
    }

    /* plain fd: a pipe without reader still raises SIGPIPE once */
    begin();
    int p[2];
    if (pipe(p) != 0)
        die("pipe");
    close(p[0]);
    int before = npipe;
    errno = 0;
    ssize_t r = write(p[1], "x", 1);
    EXPECT(r == -1 && errno == EPIPE, "write to a reader-less pipe: %zd/%s", r, ename(errno));
    EXPECT(npipe - before == 1, "handler ran %d times", npipe - before);
    close(p[1]);
    report("sigpipe_handler_pipe");

    /* Our own shutdown(SHUT_WR) then write: the kernel raises SIGPIPE (it is
     * not the shim's shutdown, so the shim must not swallow it). */
    int srv, cli;
    begin_pair(&srv, &cli);
    EXPECT(shutdown(srv, SHUT_WR) == 0, "shutdown: %s", ename(errno));
    for (int k = 0; k < W_COUNT; k++) {
        before = npipe;
        errno = 0;
        r = do_write(k, srv, data, 100, 0);
        EXPECT(r == -1 && errno == EPIPE, "%s after own SHUT_WR: %zd/%s", wname[k], r,
               ename(errno));
        EXPECT(npipe - before == 1, "%s after own SHUT_WR ran the handler %d times", wname[k],
               npipe - before);
    }
    EXPECT(sees_eof(cli), "peer did not see EOF after SHUT_WR");
    /* reading is still allowed after SHUT_WR */
    EXPECT(write(cli, "r", 1) == 1 && recv_exact(srv, rbuf, 1) == 1 && rbuf[0] == 'r',
           "read after own SHUT_WR");
    end_pair(srv, cli, "sigpipe_own_shutdown");

    /* MSG_NOSIGNAL: never a signal. */
    begin();
    for (int k = W_SEND; k <= W_SENDMSG; k++) {
        tcp_pair(&srv, &cli);
        rst_close(cli);
        EXPECT(wait_hup(srv), "RST never arrived");
        before = npipe;
        for (int i = 0; i < 3; i++) {
            errno = 0;
            r = do_write(k, srv, data, 100, MSG_NOSIGNAL);
            EXPECT(r == -1 && (errno == EPIPE || errno == ECONNRESET), "%s #%d: %zd/%s",
                   wname[k], i + 1, r, ename(errno));
        }
        EXPECT(npipe == before, "%s(MSG_NOSIGNAL) ran the handler %d times", wname[k],
               npipe - before);
        close(srv);
    }
    report("sigpipe_nosignal_handler");

    /* SIGPIPE blocked: it stays pending, once, as the kernel leaves it. */
    begin();
    sigset_t pipe_only, old;
    sigemptyset(&pipe_only);
    sigaddset(&pipe_only, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    for (int k = 0; k < W_COUNT; k++) {
        tcp_pair(&srv, &cli);
        rst_close(cli);
        EXPECT(wait_hup(srv), "RST never arrived");
        for (int i = 0; i < 2; i++) {
            errno = 0;
            r = do_write(k, srv, data, 100, 0);
            int e = errno;
            struct timespec zero = {0, 0};
            int sig = sigtimedwait(&pipe_only, NULL, &zero);
            EXPECT(r == -1 && (e == EPIPE || e == ECONNRESET), "%s #%d: %zd/%s", wname[k],
                   i + 1, r, ename(e));
            EXPECT(sig == (e == EPIPE ? SIGPIPE : -1),
                   "%s #%d failed with %s, SIGPIPE %s pending", wname[k], i + 1, ename(e),
                   sig == SIGPIPE ? "was" : "was not");
        }
        close(srv);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    report("sigpipe_blocked_pending");
    sigpipe_ignore();

    begin();
    char st_why[64];
    int st = run_child(child_nosignal, 0, NULL);
    describe_status(st, st_why, sizeof(st_why));
    EXPECT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "MSG_NOSIGNAL with SIG_DFL: %s, expected exit 0", st_why);
    report("sigpipe_nosignal_default");
}

/* ------------------------------------------------------------------------ */
/* 3. every call made exactly once: bytes neither lost nor duplicated         */

/* Write family, accepted socket -> peer.  Lock-step rounds (each call's
 * count exact, the peer gets exactly those bytes, nothing more), then a
 * stream larger than the socket buffers (the writer blocks; totals and
 * checksum exact). */
static void check_io_write(void)
{
    for (int k = 0; k < W_COUNT; k++) {
        int srv, cli;
        begin_pair(&srv, &cli);
        unsigned char got[4096];
        for (int i = 0; i < 20; i++) {
            size_t n = 1 + (size_t)(i * 997) % sizeof(got);
            const unsigned char *src = data + i * 31;
            ssize_t r = do_write(k, srv, src, n, 0);
            EXPECT(r == (ssize_t)n, "%s round %d: %zd of %zu (%s)", wname[k], i, r, n,
                   ename(errno));
            size_t g = recv_exact(cli, got, n);
            EXPECT(g == n && !memcmp(got, src, n), "%s round %d: peer got %zu bytes%s",
                   wname[k], i, g, g == n ? " (different)" : "");
            EXPECT(drained(cli), "%s round %d: peer got extra bytes", wname[k], i);
        }

        /* streamed */
        struct drain d;
        drain_start(&d, cli);
        uint64_t want = FNV_INIT;
        size_t total = 0;
        size_t limit = k == W_SENDFILE ? FILE_SIZE : DATA_SIZE;
        for (size_t off = 0, step = 100003; off < limit; off += step) {
            size_t n = limit - off < step ? limit - off : step;
            const unsigned char *src = data + off;
            ssize_t r = do_write(k, srv, src, n, 0);
            EXPECT(r > 0, "%s stream: %zd (%s)", wname[k], r, ename(errno));
            if (r <= 0)
                break;
            want = fnv(want, src, (size_t)r);
            total += (size_t)r;
            /* blocking TCP writes are complete unless interrupted */
            EXPECT(r == (ssize_t)n, "%s stream: short write %zd of %zu", wname[k], r, n);
        }
        shutdown(srv, SHUT_WR);
        pthread_join(d.t, NULL);
        EXPECT(d.err == 0 && d.total == total && d.hash == want,
               "%s stream: wrote %zu, peer read %zu%s", wname[k], total, d.total,
               d.total == total ? " (different)" : "");
        close(srv);
        close(cli);
        report_variant("io_%s", wname[k]);
    }
}

/* Read family, peer -> accepted socket: lock-step exact rounds, then a
 * stream (reads of varied sizes into a fixed buffer) to EOF. */
static void check_io_read(void)
{
    for (int k = 0; k < R_COUNT; k++) {
        int srv, cli;
        begin_pair(&srv, &cli);
        for (int i = 0; i < 20; i++) {
            size_t n = 1 + (size_t)(i * 1009) % sizeof(rbuf);
            const unsigned char *src = data + i * 37;
            EXPECT(write_all(cli, src, n) == 0, "peer write: %s", ename(errno));
            unsigned char got[sizeof(rbuf)];
            size_t g = 0;
            while (g < n) {
                struct pollfd p = {srv, POLLIN, 0};
                if (poll(&p, 1, WAIT_MS) != 1)
                    break;
                ssize_t r = do_read(k, srv, n - g, 0);
                if (r <= 0)
                    break;
                memcpy(got + g, rbuf, (size_t)r);
                g += (size_t)r;
            }
            EXPECT(g == n && !memcmp(got, src, n), "%s round %d: got %zu of %zu%s", rname[k],
                   i, g, n, g == n ? " (different)" : "");
            EXPECT(drained(srv), "%s round %d: more bytes than sent", rname[k], i);
        }

        struct feed f;
        feed_start(&f, cli, data, DATA_SIZE, 65521, 0);
        uint64_t h = FNV_INIT;
        size_t total = 0;
        for (unsigned i = 0;; i++) {
            size_t n = 1 + (i * 2654435761u) % sizeof(rbuf);
            ssize_t r = do_read(k, srv, n, 0);
            if (r < 0 && errno == EINTR)
                continue;
            EXPECT(r >= 0, "%s stream: %s", rname[k], ename(errno));
            EXPECT(r <= (ssize_t)n, "%s stream: %zd bytes for a %zu-byte buffer", rname[k], r, n);
            if (r <= 0)
                break;
            h = fnv(h, rbuf, (size_t)r);
            total += (size_t)r;
        }
        pthread_join(f.t, NULL);
        EXPECT(f.err == 0 && total == DATA_SIZE && h == fnv(FNV_INIT, data, DATA_SIZE),
               "%s stream: read %zu of %u%s", rname[k], total, DATA_SIZE,
               total == DATA_SIZE ? " (different)" : "");
        close(srv);
        close(cli);
        report_variant("io_%s", rname[k]);
    }
}

/* MSG_PEEK leaves the bytes in place: peeking (recv, recvfrom, recvmsg)
 * then reading must return the same bytes, once. */
static void check_io_peek(void)
{
    int srv, cli;
    begin_pair(&srv, &cli);
    EXPECT(write_all(cli, data, 100) == 0, "peer write");
    ssize_t r = 0;
    for (int i = 0; i < WAIT_MS && r != 100; i++) {
        r = recv(srv, rbuf, 200, MSG_PEEK | MSG_DONTWAIT);
        if (r != 100) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    EXPECT(r == 100 && !memcmp(rbuf, data, 100), "recv(MSG_PEEK): %zd", r);
    for (int k = R_RECV; k <= R_RECVMSG; k++) {
        memset(rbuf, 0, 200);
        r = do_read(k, srv, 200, MSG_PEEK);
        EXPECT(r == 100 && !memcmp(rbuf, data, 100), "%s(MSG_PEEK) again: %zd", rname[k], r);
    }
    memset(rbuf, 0, 200);
    r = read(srv, rbuf, 200);
    EXPECT(r == 100 && !memcmp(rbuf, data, 100), "read after peek: %zd", r);
    EXPECT(drained(srv), "bytes left after reading the peeked data");
    end_pair(srv, cli, "io_peek");
}

/* MSG_WAITALL: one recv collects data arriving in several pieces. */
static void check_io_waitall(void)
{
    int srv, cli;
    begin_pair(&srv, &cli);
    struct feed f;
    feed_start(&f, cli, data, 3000, 1000, 20);
    ssize_t r = recv(srv, rbuf, 3000, MSG_WAITALL);
    EXPECT(r == 3000 && !memcmp(rbuf, data, 3000), "recv(MSG_WAITALL): %zd (%s)", r,
           ename(errno));
    pthread_join(f.t, NULL);
    EXPECT(sees_eof(srv), "no EOF after the data");
    end_pair(srv, cli, "io_waitall");
}

/* 0-byte writes and reads return 0 and move nothing. */
static void check_io_zero(void)
{
    int srv, cli;
    begin_pair(&srv, &cli);
    for (int k = 0; k < W_COUNT; k++) {
        errno = 0;
        ssize_t r = do_write(k, srv, data, 0, 0);
        EXPECT(r == 0, "0-byte %s: %zd/%s", wname[k], r, ename(errno));
    }
    struct iovec iov = {rbuf, 1};
    EXPECT(writev(srv, &iov, 0) == 0, "writev with no iovec");
    EXPECT(drained(cli), "0-byte writes sent bytes");
    /* (read of 0 bytes returns 0 at once; a blocking recv of 0 bytes would
     * wait for data on TCP, so it is asked non-blocking) */
    EXPECT(read(srv, rbuf, 0) == 0, "0-byte read");
    errno = 0;
    ssize_t r = recv(srv, rbuf, 0, MSG_DONTWAIT);
    EXPECT(r == -1 && errno == EAGAIN, "0-byte recv(MSG_DONTWAIT): %zd/%s", r, ename(errno));
    EXPECT(write(cli, "z", 1) == 1 && recv_exact(srv, rbuf, 1) == 1 && rbuf[0] == 'z',
           "connection broken after 0-byte calls");
    end_pair(srv, cli, "io_zero_length");
}

/* sendfile (no flags argument: the shim blocks SIGPIPE around it) sends
 * exactly the file's bytes, honours the offset pointer and, without one, the
 * file position. */
static void check_sendfile(void)
{
    int srv, cli;
    begin_pair(&srv, &cli);
    struct drain d;
    drain_start(&d, cli);
    if (lseek(tmpfd, 0, SEEK_SET) != 0)
        die("lseek");
    off_t off = 0;
    while (off < (off_t)FILE_SIZE) {
        ssize_t r = sendfile(srv, tmpfd, &off, FILE_SIZE - (size_t)off);
        EXPECT(r > 0, "sendfile: %zd (%s)", r, ename(errno));
        if (r <= 0)
            break;
    }
    EXPECT(off == (off_t)FILE_SIZE, "offset ended at %lld", (long long)off);
    EXPECT(lseek(tmpfd, 0, SEEK_CUR) == 0, "sendfile with an offset moved the file position");
    /* without an offset pointer: from, and advancing, the file position */
    if (lseek(tmpfd, 1000, SEEK_SET) != 1000)
        die("lseek");
    size_t left = 5000;
    while (left > 0) {
        ssize_t r = sendfile(srv, tmpfd, NULL, left);
        EXPECT(r > 0, "sendfile(NULL offset): %zd (%s)", r, ename(errno));
        if (r <= 0)
            break;
        left -= (size_t)r;
    }
    EXPECT(lseek(tmpfd, 0, SEEK_CUR) == 6000, "file position not advanced");
    /* at EOF: 0 */
    off = FILE_SIZE;
    EXPECT(sendfile(srv, tmpfd, &off, 100) == 0, "sendfile at EOF");
    shutdown(srv, SHUT_WR);
    pthread_join(d.t, NULL);
    uint64_t want = fnv(fnv(FNV_INIT, data, FILE_SIZE), data + 1000, 5000);
    EXPECT(d.err == 0 && d.total == FILE_SIZE + 5000 && d.hash == want,
           "peer read %zu of %u%s", d.total, FILE_SIZE + 5000,
           d.total == FILE_SIZE + 5000 ? " (different)" : "");
    end_pair(srv, cli, "sendfile_bytes");
}

/* ------------------------------------------------------------------------ */
/* 4. duplicates and closes                                                  */

/* One byte each way through fd. */
static int io_through(int fd, int cli, char c)
{
    char b = 0;
    if (write(fd, &c, 1) != 1 || recv_exact(cli, &b, 1) != 1 || b != c)
        return 0;
    if (write(cli, &c, 1) != 1 || recv_exact(fd, &b, 1) != 1 || b != c)
        return 0;
    return 1;
}

/* The shim aliases copies of a tracked fd.  Every copy must keep working
 * after the original is closed, and the connection ends (peer sees EOF) only
 * when the last copy is closed. */
static void check_dups(void)
{
    int srv, cli, p[2];
    tcp_pair(&srv, &cli);
    if (pipe(p) != 0) /* dup2/dup3 must replace open fds */
        die("pipe");
    int fds[4];
    const char *names[4] = {"dup", "dup2", "dup3", "fcntl_dupfd_cloexec"};
    fds[0] = dup(srv);
    fds[1] = dup2(srv, p[0]);
    fds[2] = dup3(srv, p[1], O_CLOEXEC);
    fds[3] = fcntl(srv, F_DUPFD_CLOEXEC, 50);
    for (int i = 0; i < 4; i++) {
        begin();
        EXPECT(fds[i] >= 0 && fds[i] != srv, "%s failed: %s", names[i], ename(errno));
        if (i == 1)
            EXPECT(fds[1] == p[0], "dup2 did not return its target");
        if (i == 2)
            EXPECT(fds[2] == p[1] && cloexec(fds[2]), "dup3(O_CLOEXEC)");
        if (i == 3)
            EXPECT(fds[3] >= 50 && cloexec(fds[3]), "F_DUPFD_CLOEXEC");
        if (i < 2)
            EXPECT(!cloexec(fds[i]), "%s copied FD_CLOEXEC", names[i]);
        EXPECT(io_through(fds[i], cli, (char)('a' + i)), "I/O through the %s copy", names[i]);
        report_variant("%s_io", names[i]);
    }

    begin();
    EXPECT(close(srv) == 0, "close original: %s", ename(errno));
    for (int i = 0; i < 4; i++)
        EXPECT(io_through(fds[i], cli, (char)('A' + i)), "%s copy broken after closing the original",
               names[i]);
    /* read and write through different copies of the same connection */
    EXPECT(write(fds[0], "xy", 2) == 2, "write via copy");
    EXPECT(recv_exact(cli, rbuf, 2) == 2 && !memcmp(rbuf, "xy", 2), "peer read");
    EXPECT(write(cli, "uv", 2) == 2 && recv_exact(fds[3], rbuf, 2) == 2 &&
               !memcmp(rbuf, "uv", 2), "read via another copy");
    report("dup_close_original");

    begin();
    for (int i = 0; i < 3; i++)
        EXPECT(close(fds[i]) == 0, "close %s copy: %s", names[i], ename(errno));
    EXPECT(drained(cli), "peer saw EOF/data while a copy was still open");
    EXPECT(io_through(fds[3], cli, 'L'), "last copy broken");
    EXPECT(close(fds[3]) == 0, "close last copy");
    EXPECT(sees_eof(cli), "peer did not see EOF after the last copy was closed");
    close(cli);
    report("dup_close_all_eof");
}

/* dup2 onto a tracked fd implicitly closes that connection: the number now
 * names a pipe and must behave as one; the peer sees EOF. */
static void check_dup2_over_tracked(void)
{
    int srv, cli, p[2];
    begin_pair_pipe(&srv, &cli, p);
    EXPECT(dup2(p[1], srv) == srv, "dup2 over the socket: %s", ename(errno));
    EXPECT(sees_eof(cli), "peer did not see EOF");
    EXPECT(write(srv, "pipe", 4) == 4, "write to the replaced fd: %s", ename(errno));
    struct iovec iov = {(void *)"line", 4};
    EXPECT(writev(srv, &iov, 1) == 4, "writev to the replaced fd: %s", ename(errno));
    EXPECT(recv_exact(p[0], rbuf, 8) == 8 && !memcmp(rbuf, "pipeline", 8), "pipe content");
    errno = 0;
    ssize_t r = send(srv, "x", 1, 0);
    EXPECT(r == -1 && errno == ENOTSOCK, "send to the replaced fd: %zd/%s", r, ename(errno));
    close(srv);
    close_pipe(p);
    close(cli);
    report("dup2_over_tracked");
}

/* The number of a closed tracked fd is reused at once (lowest free fd): the
 * new pipe must behave as a pipe. */
static void check_fd_reuse(void)
{
    begin();
    int srv, cli, p[2];
    tcp_pair(&srv, &cli);
    close(srv);
    if (pipe(p) != 0)
        die("pipe");
    EXPECT(write(p[1], "reuse", 5) == 5, "write to the new pipe: %s", ename(errno));
    EXPECT(recv_exact(p[0], rbuf, 5) == 5 && !memcmp(rbuf, "reuse", 5), "pipe content");
    EXPECT(sees_eof(cli), "peer did not see EOF");
    close_pipe(p);
    close(cli);
    report("fd_reuse_after_close");
}

/* Replaced behind the shim's back (raw dup3 syscall, no hook ran): write and
 * writev on the number must still act on what it names now -- the pipe. */
static void check_replaced_behind_back(void)
{
    begin();
    for (int k = 0; k < 2; k++) {
        int srv, cli, p[2];
        tcp_pair_pipe(&srv, &cli, p);
        EXPECT(syscall(SYS_dup3, p[1], srv, 0) == srv, "raw dup3: %s", ename(errno));
        ssize_t r;
        if (k == 0) {
            r = write(srv, "abc", 3);
        } else {
            struct iovec iov[2] = {{(void *)"a", 1}, {(void *)"bc", 2}};
            r = writev(srv, iov, 2);
        }
        EXPECT(r == 3, "%s to the replaced fd: %zd/%s", k ? "writev" : "write", r, ename(errno));
        EXPECT(write(srv, "d", 1) == 1, "second write: %s", ename(errno));
        EXPECT(recv_exact(p[0], rbuf, 4) == 4 && !memcmp(rbuf, "abcd", 4), "pipe content");
        EXPECT(sees_eof(cli), "peer did not see EOF");
        close(srv);
        close_pipe(p);
        close(cli);
    }
    report("fd_replaced_behind_back");
}

/* fdopen + stdio + fclose (hooked) on a copy of the connection. */
static void check_fdopen_fclose(void)
{
    int srv, cli;
    begin_pair(&srv, &cli);
    int d = dup(srv);
    FILE *f = d >= 0 ? fdopen(d, "w") : NULL;
    if (!f)
        die("fdopen");
    EXPECT(fputs("stdio line\n", f) >= 0, "fputs");
    EXPECT(fclose(f) == 0, "fclose: %s", ename(errno));
    EXPECT(!is_open(d), "fclose left the fd open");
    EXPECT(recv_exact(cli, rbuf, 11) == 11 && !memcmp(rbuf, "stdio line\n", 11),
           "peer did not get the stdio line");
    EXPECT(io_through(srv, cli, 'f'), "original broken after fclose of a copy");
    close(srv);
    EXPECT(sees_eof(cli), "peer did not see EOF");
    close(cli);
    report("fdopen_fclose");
}

/* close_range(CLOEXEC) only marks; close_range(0) closes exactly the range.
 * Uses three free fds >= 200 so nothing else (the shim's own log fd, for one)
 * is touched. */
static void check_close_range(void)
{
    int srv, cli;
    begin_pair(&srv, &cli);
    int n = 200;
    while (is_open(n) || is_open(n + 1) || is_open(n + 2))
        n++;
    EXPECT(dup2(srv, n) == n, "dup2");
    EXPECT(dup3(srv, n + 1, 0) == n + 1, "dup3");
    EXPECT(fcntl(srv, F_DUPFD, n + 2) == n + 2, "F_DUPFD");
    EXPECT(close_range((unsigned)n, (unsigned)n + 2, CLOSE_RANGE_CLOEXEC) == 0,
           "close_range(CLOEXEC): %s", ename(errno));
    for (int i = 0; i < 3; i++)
        EXPECT(is_open(n + i) && cloexec(n + i) && io_through(n + i, cli, 'c'),
               "copy %d after close_range(CLOEXEC)", i);
    EXPECT(close_range((unsigned)n, (unsigned)n + 2, 0) == 0, "close_range: %s", ename(errno));
    for (int i = 0; i < 3; i++)
        EXPECT(!is_open(n + i), "copy %d still open after close_range", i);
    EXPECT(io_through(srv, cli, 'r'), "original broken after close_range of its copies");
    EXPECT(drained(cli), "peer got extra bytes");
    close(srv);
    EXPECT(sees_eof(cli), "peer did not see EOF");
    close(cli);
    report("close_range");
}

/* ------------------------------------------------------------------------ */
/* 5. readiness                                                              */

enum { P_POLL, P_PPOLL, P_SELECT, P_PSELECT, P_EPOLL, P_COUNT };
static const char *const pname[P_COUNT] = {"poll", "ppoll", "select", "pselect", "epoll"};
static int epfd = -1;

/* 1 if fd is readable within ms, 0 if not, -1 on error. */
static int readable(int api, int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    fd_set r;
    struct epoll_event ev[4];
    int n;
    switch (api) {
    case P_POLL:
        n = poll(&p, 1, ms);
        return n < 0 ? -1 : n == 1 && (p.revents & POLLIN);
    case P_PPOLL:
        n = ppoll(&p, 1, &ts, NULL);
        return n < 0 ? -1 : n == 1 && (p.revents & POLLIN);
    case P_SELECT:
        FD_ZERO(&r);
        FD_SET(fd, &r);
        n = select(fd + 1, &r, NULL, NULL, &tv);
        return n < 0 ? -1 : n == 1 && FD_ISSET(fd, &r);
    case P_PSELECT:
        FD_ZERO(&r);
        FD_SET(fd, &r);
        n = pselect(fd + 1, &r, NULL, NULL, &ts, NULL);
        return n < 0 ? -1 : n == 1 && FD_ISSET(fd, &r);
    case P_EPOLL:
        n = epoll_wait(epfd, ev, 4, ms);
        return n < 0 ? -1 : n == 1 && (ev[0].events & EPOLLIN) && ev[0].data.u64 == 0x5eedULL;
    }
    return -1;
}

/* Each readiness API on the accepted socket: not readable when empty,
 * readable once data arrives, not readable after it was read, readable on
 * EOF. */
static void check_readiness(void)
{
    for (int a = 0; a < P_COUNT; a++) {
        int srv, cli;
        begin_pair(&srv, &cli);
        if (a == P_EPOLL) {
            epfd = epoll_create1(EPOLL_CLOEXEC);
            struct epoll_event ev;
            memset(&ev, 0, sizeof(ev));
            ev.events = EPOLLIN;
            ev.data.u64 = 0x5eedULL;
            if (epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, srv, &ev) != 0)
                die("epoll");
            errno = 0;
            EXPECT(epoll_ctl(epfd, EPOLL_CTL_ADD, srv, &ev) == -1 && errno == EEXIST,
                   "second EPOLL_CTL_ADD: %s", ename(errno));
        }
        EXPECT(readable(a, srv, 0) == 0, "%s: empty socket readable", pname[a]);
        EXPECT(write(cli, "1", 1) == 1, "peer write");
        EXPECT(readable(a, srv, WAIT_MS) == 1, "%s: data not reported", pname[a]);
        EXPECT(read(srv, rbuf, 10) == 1 && rbuf[0] == '1', "read");
        EXPECT(readable(a, srv, 0) == 0, "%s: readable after draining", pname[a]);
        EXPECT(write(cli, "23", 2) == 2, "peer write");
        EXPECT(readable(a, srv, WAIT_MS) == 1, "%s: second data not reported", pname[a]);
        EXPECT(recv_exact(srv, rbuf, 2) == 2 && !memcmp(rbuf, "23", 2), "recv");
        if (a == P_POLL) {
            struct pollfd p = {srv, POLLOUT, 0};
            EXPECT(poll(&p, 1, 0) == 1 && (p.revents & POLLOUT), "poll: not writable");
        }
        if (a == P_EPOLL) {
            struct epoll_event ev, out[4];
            memset(&ev, 0, sizeof(ev));
            ev.events = EPOLLOUT;
            ev.data.u64 = 7;
            EXPECT(epoll_ctl(epfd, EPOLL_CTL_MOD, srv, &ev) == 0, "EPOLL_CTL_MOD");
            int n = epoll_wait(epfd, out, 4, 0);
            EXPECT(n == 1 && (out[0].events & EPOLLOUT) && out[0].data.u64 == 7,
                   "EPOLLOUT after MOD: %d", n);
            EXPECT(epoll_ctl(epfd, EPOLL_CTL_DEL, srv, NULL) == 0, "EPOLL_CTL_DEL");
            EXPECT(epoll_wait(epfd, out, 4, 0) == 0, "events after DEL");
            errno = 0;
            EXPECT(epoll_ctl(epfd, EPOLL_CTL_DEL, srv, NULL) == -1 && errno == ENOENT,
                   "second EPOLL_CTL_DEL: %s", ename(errno));
            ev.events = EPOLLIN;
            ev.data.u64 = 0x5eedULL;
            EXPECT(epoll_ctl(epfd, EPOLL_CTL_ADD, srv, &ev) == 0, "EPOLL_CTL_ADD again");
        }
        close(cli);
        EXPECT(readable(a, srv, WAIT_MS) == 1, "%s: EOF not reported", pname[a]);
        EXPECT(read(srv, rbuf, 10) == 0, "read at EOF");
        close(srv);
        if (a == P_EPOLL)
            close(epfd);
        report_variant("readiness_%s", pname[a]);
    }

    /* a timeout on an idle socket is a timeout: 0, after (about) the time */
    int srv, cli;
    begin_pair(&srv, &cli);
    for (int a = P_POLL; a <= P_PSELECT; a++) {
        long long t0 = now_ms();
        int r = readable(a, srv, 50);
        long long dt = now_ms() - t0;
        EXPECT(r == 0, "%s timeout: %d (%s)", pname[a], r, ename(errno));
        EXPECT(dt >= 40, "%s returned early", pname[a]);
    }
    end_pair(srv, cli, "readiness_timeout");
}

/* ------------------------------------------------------------------------ */
/* 6. file and pipe I/O interleaved with socket I/O                          */

static void check_interleave(void)
{
    int srv, cli, p[2];
    begin_pair_pipe(&srv, &cli, p);
    int f = make_tmpfile();
    unsigned char got[1024];
    size_t off = 0;
    for (int i = 0; i < 300 && !why[0]; i++) {
        size_t n = 1 + (size_t)(i * 37) % sizeof(got);
        const unsigned char *src = data + off;
        EXPECT(write(f, src, n) == (ssize_t)n, "file write %d", i);
        EXPECT(write(p[1], src, n) == (ssize_t)n, "pipe write %d", i);
        EXPECT(write(srv, src, n) == (ssize_t)n, "socket write %d", i);
        EXPECT(write(cli, src, n) == (ssize_t)n, "peer write %d", i);
        EXPECT(recv_exact(p[0], got, n) == n && !memcmp(got, src, n), "pipe read %d", i);
        EXPECT(recv_exact(cli, got, n) == n && !memcmp(got, src, n), "peer read %d", i);
        EXPECT(recv_exact(srv, got, n) == n && !memcmp(got, src, n), "socket read %d", i);
        off += n;
    }
    EXPECT(lseek(f, 0, SEEK_SET) == 0, "lseek");
    unsigned char *back = malloc(off + 1);
    if (!back)
        die("malloc");
    size_t g = 0;
    for (;;) {
        ssize_t r = read(f, back + g, off + 1 - g);
        if (r <= 0)
            break;
        g += (size_t)r;
    }
    EXPECT(g == off && !memcmp(back, data, off), "file read back %zu of %zu", g, off);
    free(back);
    EXPECT(drained(srv) && drained(cli), "extra socket bytes");
    close(f);
    close_pipe(p);
    end_pair(srv, cli, "interleave_file_pipe_socket");
}

/* ------------------------------------------------------------------------ */

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "hook_check: timed out (a hooked call blocked)\n";
    ssize_t r = write(2, msg, sizeof(msg) - 1);
    (void)r;
    _exit(3);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* Hard safety net: everything normally takes well under a second. */
    signal(SIGALRM, on_alarm);
    alarm(28);
    sigpipe_ignore();

    make_data();
    tmpfd = make_tmpfile();
    if (write_all(tmpfd, data, FILE_SIZE) != 0)
        die("temp file");

    check_errno_eagain();
    check_errno_ebadf();
    check_errno_notsock();
    check_errno_rst();
    check_errno_accept();
    check_errno_dup();
    check_fcntl_flags();

    check_sigpipe_default();
    check_sigpipe_handler();

    check_io_write();
    check_io_read();
    check_io_peek();
    check_io_waitall();
    check_io_zero();
    check_sendfile();

    check_dups();
    check_dup2_over_tracked();
    check_fd_reuse();
    check_replaced_behind_back();
    check_fdopen_fclose();
    check_close_range();

    check_readiness();
    check_interleave();

    if (failures)
        printf("hook_check: FAIL %d of %d checks\n", failures, checks);
    else
        printf("hook_check: ok %d checks\n", checks);
    return failures ? 1 : 0;
}
