/* alias_check: aliasing and close paths keep the shim's fd table honest.
 *
 * Release rounds: a tracked connection A that the program is waiting on (its client says
 * nothing, so the first-byte timer runs) is released through one close path, and its number
 * is taken over at once by something healthy: a new accepted connection (ping-pong every
 * 30 ms), a pipe or an outbound connection the program waits on for a slow but legitimate
 * answer (it comes after 3x the first-byte timer), or a file. That object must never be shut
 * down or disturbed, and A (closed by the program) must never appear in a reap. Meanwhile a
 * stalled connection S elsewhere in the same round must still be reaped.
 *   close paths: close, close_range(n, n, 0), fclose(fdopen()), dup2(x, n), dup3(x, n, O_CLOEXEC), closefrom(n) (the last round: it
 *   also closes the shim's own log descriptor, which must be reopened), and
 *   syscall(SYS_close) (raw: no hook sees it; the shim's SO_COOKIE re-check must refuse to act).
 *
 * Alias rounds: a stalled connection copied with dup, fcntl(F_DUPFD), fcntl(F_DUPFD_CLOEXEC),
 * dup2/dup3 onto another tracked connection, then its original number closed, is still
 * reaped through the copy; a failed dup2 and close_range(CLOSE_RANGE_CLOEXEC) close nothing,
 * so it stays guarded under its own number.
 *
 * Prints one line per round (`release ...`, `alias ...`, with fd numbers and client ports so
 * a test can match the guard log) and `alias_check: ok` or `alias_check: FAIL N`. Unguarded,
 * nothing is reaped (the program adapts its expectations: LD_PRELOAD names a mapped library).
 * Under the shim use STALLGUARD_FIRST_BYTE=200ms (the hold period is 4x that).
 *
 * `alias_check unshare` runs close_range(CLOSE_RANGE_UNSHARE) alone (see unshare_mode);
 * `alias_check lowfd` checks that the shim never takes a low fd number (see lowfd_mode);
 * `alias_check split unshare|close_range`: a connection accepted by a thread that took a
 * private fd table is reaped (see split_mode); `alias_check leader_exit`: one accepted after
 * the main thread ended with pthread_exit is reaped (see leader_exit_mode).
 *
 * `alias_check fallback unshare|close_range`: the same with pidfd_getfd refused (seccomp): the
 * watcher stays in the program's table, still reaps there, and says that the split table is
 * not guarded.
 *
 * `alias_check fd3`: a silent connection on fd 3 is reaped while the watcher rewrites its
 * metrics file (see fd3_mode).
 *
 * `alias_check late_filter`: a seccomp filter installed on every thread after the watcher
 * started: no copy is risked, nothing is cut, the guard says so (see late_filter_mode).
 *
 * usage: alias_check [unshare|lowfd|split HOW|fallback HOW|leader_exit|fd3|late_filter]  (HOW: unshare or
 *        close_range)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#ifndef CLOSE_RANGE_UNSHARE
#define CLOSE_RANGE_UNSHARE (1U << 1)
#endif
#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

#define HOLD_MS 800
#define LATE_MS 120 /* A must be closed this soon after the wait on it began */

static int guarded;
static int lst;
static unsigned short lport;
static int failures;

static void die(const char *what)
{
    fprintf(stderr, "alias_check: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int dial(void)
{
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(lport),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa)))
        die("connect");
    return c;
}

static int port_of(int fd)
{
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    if (getsockname(fd, (struct sockaddr *)&sa, &sl))
        return -1;
    return ntohs(sa.sin_port);
}

struct pair {
    int srv, cli;
};

static struct pair connection(void)
{
    struct pair p;
    p.cli = dial();
    p.srv = accept(lst, NULL, NULL);
    if (p.srv < 0)
        die("accept");
    return p;
}

/* The program now waits on the client (an EAGAIN read): the first-byte timer runs. */
static void mark_waiting(int fd)
{
    char b;
    if (recv(fd, &b, 1, MSG_DONTWAIT) >= 0) {
        fprintf(stderr, "alias_check: a silent client sent data\n");
        exit(2);
    }
}

/* 1: the connection was cut (EOF/reset); 0: still open. Never blocks. */
static int is_cut(int fd)
{
    char b[16];
    ssize_t r = recv(fd, b, sizeof(b), MSG_DONTWAIT);
    if (r == 0)
        return 1;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    return r < 0 ? 1 : 0;
}

enum reuse { R_CONN, R_PIPE, R_OUTBOUND, R_FILE };
static const char *reuse_name[] = {"conn", "pipe", "outbound", "file"};

struct healthy {
    enum reuse kind;
    int fd;    /* the reused number */
    int other; /* conn: its client; pipe: write end; outbound: the accepted upstream side */
    int port;  /* the port the guard log would show as this object's peer (0: none) */
    int ok;
    long exchanges;
};

/* Prepared before A is released, so that nothing else takes a number in between. */
struct prepared {
    int rcli;    /* conn: a client already in the accept queue */
    int x;       /* dup2/dup3 paths: the object to copy onto n */
    int x_other; /* and its partner (conn client / pipe write end) */
};

static void prepare(enum reuse kind, const char *path, struct prepared *pr)
{
    pr->rcli = pr->x = pr->x_other = -1;
    int onto = !strncmp(path, "dup", 3);
    if (onto) {
        if (kind == R_CONN) {
            struct pair b = connection();
            pr->x = b.srv;
            pr->x_other = b.cli;
        } else {
            int p[2];
            if (pipe2(p, O_NONBLOCK))
                die("pipe");
            pr->x = p[0];
            pr->x_other = p[1];
        }
    } else if (kind == R_CONN) {
        pr->rcli = dial();
    }
}

/* Takes the lowest free number (n, just released) with a healthy object. */
static void take_over(enum reuse kind, const char *path, struct prepared *pr, int n,
                      struct healthy *h)
{
    h->kind = kind;
    h->ok = 1;
    h->exchanges = 0;
    h->port = 0;
    if (!strncmp(path, "dup", 3)) {
        h->fd = n;
        h->other = pr->x_other;
        if (kind == R_CONN)
            h->port = port_of(pr->x_other);
        return;
    }
    int p[2];
    switch (kind) {
    case R_CONN:
        h->fd = accept(lst, NULL, NULL);
        h->other = pr->rcli;
        h->port = port_of(pr->rcli);
        break;
    case R_PIPE:
        if (pipe2(p, O_NONBLOCK))
            die("pipe");
        h->fd = p[0];
        h->other = p[1];
        break;
    case R_OUTBOUND: {
        h->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(lport),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (h->fd < 0 || connect(h->fd, (struct sockaddr *)&sa, sizeof(sa)))
            die("outbound connect");
        h->other = accept(lst, NULL, NULL); /* the "upstream" (tracked; never waits on) */
        h->port = port_of(h->fd);
        break;
    }
    case R_FILE: {
        char tmpl[] = "/tmp/alias_check.XXXXXX";
        h->fd = mkstemp(tmpl);
        if (h->fd < 0)
            die("mkstemp");
        unlink(tmpl);
        h->other = -1;
        break;
    }
    }
}

/* Begins the legitimate wait on a slow upstream (pipe, outbound): EAGAIN now, answer later. */
static void start_slow_wait(struct healthy *h)
{
    char b[8];
    if (h->kind == R_PIPE || h->kind == R_OUTBOUND) {
        ssize_t r = h->kind == R_PIPE ? read(h->fd, b, sizeof(b)) : recv(h->fd, b, sizeof(b), MSG_DONTWAIT);
        if (!(r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)))
            h->ok = 0;
    }
}

/* One healthy exchange (conn, file); pipe and outbound answer only at the end. */
static void exchange(struct healthy *h)
{
    char b[8];
    if (!h->ok)
        return;
    if (h->kind == R_CONN) {
        if (write(h->other, "ping", 4) != 4 || read(h->fd, b, 4) != 4 || memcmp(b, "ping", 4) ||
            write(h->fd, "pong", 4) != 4 || read(h->other, b, 4) != 4 || memcmp(b, "pong", 4))
            h->ok = 0;
    } else if (h->kind == R_FILE) {
        if (pwrite(h->fd, "file", 4, 0) != 4 || pread(h->fd, b, 4, 0) != 4 || memcmp(b, "file", 4))
            h->ok = 0;
    } else {
        return;
    }
    h->exchanges++;
}

/* The slow upstream answers; the program's wait must end with the answer, not EOF. */
static void finish_slow_wait(struct healthy *h)
{
    char b[8];
    if (!h->ok || (h->kind != R_PIPE && h->kind != R_OUTBOUND))
        return;
    if (write(h->other, "late", 4) != 4) {
        h->ok = 0;
        return;
    }
    usleep(2000);
    ssize_t r = h->kind == R_PIPE ? read(h->fd, b, sizeof(b)) : recv(h->fd, b, sizeof(b), MSG_DONTWAIT);
    if (r != 4 || memcmp(b, "late", 4))
        h->ok = 0;
    else
        h->exchanges++;
}

struct release {
    const char *path;
    enum reuse kind;
    struct pair a, s;
    int n, a_port, s_port;
    long late_ms; /* from the wait on A starting to its release */
    struct healthy h;
};

static void release_a(const char *path, int n, int x)
{
    FILE *f;
    if (!strcmp(path, "close"))
        close(n);
    else if (!strcmp(path, "close_range"))
        close_range((unsigned)n, (unsigned)n, 0);
    else if (!strcmp(path, "close_range_unshare"))
        close_range((unsigned)n, (unsigned)n, CLOSE_RANGE_UNSHARE);
    else if (!strcmp(path, "fclose")) {
        f = fdopen(n, "r+");
        if (!f)
            die("fdopen");
        fclose(f);
    } else if (!strcmp(path, "dup2_onto")) {
        if (dup2(x, n) != n)
            die("dup2");
        close(x);
    } else if (!strcmp(path, "dup3_onto")) {
        if (dup3(x, n, O_CLOEXEC) != n)
            die("dup3");
        close(x);
    } else if (!strcmp(path, "closefrom"))
        closefrom(n);
    else if (!strcmp(path, "raw_close"))
        syscall(SYS_close, n);
    else {
        fprintf(stderr, "alias_check: unknown path %s\n", path);
        exit(2);
    }
}

static void setup_release(struct release *r, const char *path, enum reuse kind)
{
    r->path = path;
    r->kind = kind;
    int last = !strcmp(path, "closefrom");
    struct prepared pr;
    if (last) { /* A must be the highest fd: everything else first */
        r->s = connection();
        prepare(kind, path, &pr);
        r->a = connection();
    } else {
        r->a = connection();
        r->s = connection();
        prepare(kind, path, &pr);
    }
    r->n = r->a.srv;
    r->a_port = port_of(r->a.cli);
    r->s_port = port_of(r->s.cli);
    mark_waiting(r->s.srv);
    long t0 = now_ms();
    mark_waiting(r->a.srv);
    release_a(path, r->n, pr.x);
    r->late_ms = now_ms() - t0;
    take_over(kind, path, &pr, r->n, &r->h);
    start_slow_wait(&r->h);
}

struct alias {
    const char *op;
    struct pair a, b;
    int fd, a_port, b_port;
};

static void setup_alias(struct alias *al, const char *op)
{
    al->op = op;
    al->a = connection();
    al->b.srv = al->b.cli = -1;
    al->b_port = 0;
    al->a_port = port_of(al->a.cli);
    mark_waiting(al->a.srv);
    int a = al->a.srv, x = -1;
    if (!strcmp(op, "dup")) {
        x = dup(a);
        close(a);
    } else if (!strcmp(op, "fcntl_dupfd")) {
        x = fcntl(a, F_DUPFD, 0);
        close(a);
    } else if (!strcmp(op, "fcntl_dupfd_cloexec")) {
        x = fcntl(a, F_DUPFD_CLOEXEC, 3);
        close(a);
    } else if (!strcmp(op, "dup2_onto_tracked") || !strcmp(op, "dup3_onto_tracked")) {
        al->b = connection(); /* a healthy tracked connection whose number A takes over */
        al->b_port = port_of(al->b.cli);
        x = al->b.srv;
        int r = op[3] == '2' ? dup2(a, x) : dup3(a, x, 0);
        if (r != x)
            die("dup2/dup3 onto tracked");
        close(a);
    } else if (!strcmp(op, "dup2_failed")) {
        /* Neither call closes anything: A stays tracked under its own number. */
        if (dup2(a, -1) != -1 || dup2(987654, a) != -1)
            die("dup2 should have failed");
        x = a;
    } else if (!strcmp(op, "close_range_cloexec")) {
        close_range((unsigned)a, (unsigned)a, CLOSE_RANGE_CLOEXEC);
        x = a;
    } else {
        fprintf(stderr, "alias_check: unknown op %s\n", op);
        exit(2);
    }
    if (x < 0)
        die(op);
    al->fd = x;
    mark_waiting(x); /* the program waits on the connection through the copy */
}

/* `alias_check unshare`: close_range(n, n, CLOSE_RANGE_UNSHARE) in a process whose only other
 * thread is the shim's watcher. Without the shim the process is single-threaded, the kernel
 * closes n in the one fd table, and the client sees EOF; a connection accepted afterwards is
 * guarded like any other. Prints `unshare closed=0|1 later_cut=0|1`. */
static int unshare_mode(void)
{
    struct pair first = connection(); /* tracked: the watcher thread starts */
    usleep(100000);
    struct pair a = connection();
    close_range((unsigned)a.srv, (unsigned)a.srv, CLOSE_RANGE_UNSHARE);
    usleep(200000);
    int closed = is_cut(a.cli); /* the program closed it: its client must see EOF */
    struct pair later = connection();
    mark_waiting(later.srv);
    usleep(700000); /* > first-byte timer + ticks */
    int later_cut = is_cut(later.cli);
    printf("unshare guarded=%d closed=%d later_cut=%d\n", guarded, closed, later_cut);
    int ok = closed == 1 && later_cut == guarded;
    printf("alias_check unshare: %s\n", ok ? "ok" : "FAIL");
    (void)first;
    return ok ? 0 : 1;
}

/* `alias_check lowfd`: the shim's own descriptors must never take a low number, not even for
 * a moment (README: the host's "lowest free fd" arithmetic is unchanged). Each of 100 children
 * accepts its first connection (its watcher starts then) and keeps opening /dev/null for 30 ms:
 * every open must return the same lowest free number. Prints `lowfd children=N stolen=K`. */
static int lowfd_mode(void)
{
    int children = 100, stolen = 0;
    for (int i = 0; i < children; i++) {
        pid_t c = fork();
        if (c < 0)
            die("fork");
        if (c == 0) {
            alarm(10);
            struct pair p = connection(); /* the first tracked connection: the watcher starts */
            (void)p;
            int expect = open("/dev/null", O_RDONLY | O_CLOEXEC);
            close(expect);
            int other = 0;
            for (long end = now_ms() + 30; now_ms() < end;) {
                int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
                other |= fd != expect;
                close(fd);
            }
            _exit(other);
        }
        int st;
        waitpid(c, &st, 0);
        stolen += !WIFEXITED(st) || WEXITSTATUS(st) != 0;
    }
    printf("lowfd guarded=%d children=%d stolen=%d\n", guarded, children, stolen);
    printf("alias_check lowfd: %s\n", stolen ? "FAIL" : "ok");
    return stolen ? 1 : 0;
}

/* `alias_check split unshare|close_range`: a second thread takes a private fd table
 * (unshare(CLONE_FILES), or close_range(CLOSE_RANGE_UNSHARE) closing nothing) while the main
 * thread still uses the first one, then accepts a connection S whose client stays silent. In
 * the main thread's table S's number names a file. Guarded, S is reaped (through the thread's
 * table; the file under the same number in the main table is left alone); plain, nothing is
 * cut. Prints `split how=H fd=N peer=P cut=0|1 file_ok=0|1`. */
struct split_run {
    const char *how;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int accepted, filled;
    struct pair s;
    int port, cut;
};

static void *split_thread(void *arg)
{
    struct split_run *r = arg;
    int rc = !strcmp(r->how, "unshare") ? unshare(CLONE_FILES)
                                        : close_range(~0U, ~0U, CLOSE_RANGE_UNSHARE);
    if (rc)
        die("split");
    r->s = connection();
    r->port = port_of(r->s.cli); /* in this thread's table */
    pthread_mutex_lock(&r->mu);
    r->accepted = 1;
    pthread_cond_broadcast(&r->cv);
    while (!r->filled)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    mark_waiting(r->s.srv);
    usleep(700000); /* > first-byte timer + ticks */
    r->cut = is_cut(r->s.cli);
    return NULL;
}

/* `fallback`: pidfd_getfd is refused (seccomp, ENOSYS, as on Linux < 5.6) before the watcher
 * starts (main installs the filter before it listens), so it stays in the program's table: the first connection (silent) must still be
 * reaped, and S, in a table it cannot reach, must not be (the guard says so once). */
static int split_mode(const char *how, int fallback)
{
    struct pair first = connection(); /* tracked (the watcher started at listen) */
    if (fallback)
        mark_waiting(first.srv);
    usleep(100000);
    static struct split_run r = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    r.how = how;
    pthread_t t;
    if (pthread_create(&t, NULL, split_thread, &r))
        die("pthread_create");
    pthread_mutex_lock(&r.mu);
    while (!r.accepted)
        pthread_cond_wait(&r.cv, &r.mu);
    /* Fill the main table up to S's number with files. */
    int files[8], nf = 0, file = -1;
    while (nf < 8 && (file = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0 && file < r.s.srv)
        files[nf++] = file;
    r.filled = 1;
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
    pthread_join(t, NULL);
    int file_ok = file == r.s.srv && fcntl(file, F_GETFD) >= 0;
    int first_cut = is_cut(first.cli);
    printf("split how=%s guarded=%d fallback=%d fd=%d peer=%d cut=%d file_ok=%d first_cut=%d\n",
           how, guarded, fallback, r.s.srv, r.port, r.cut, file_ok, first_cut);
    int ok = r.cut == (guarded && !fallback) && file_ok && first_cut == (guarded && fallback);
    printf("alias_check split: %s\n", ok ? "ok" : "FAIL");
    (void)first;
    (void)files;
    return ok ? 0 : 1;
}

/* The listener the rounds dial (`lst`, port `lport`). */
static void open_listener(void)
{
    lst = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (lst < 0 || bind(lst, (struct sockaddr *)&sa, sizeof(sa)) || listen(lst, 256) ||
        getsockname(lst, (struct sockaddr *)&sa, &sl))
        die("listen");
    lport = ntohs(sa.sin_port);
}

/* `alias_check fd3`: a silent connection on fd 3 (the first number the watcher's own files
 * take in its own table: the metrics textfile, rewritten every second) must be reaped: the
 * watcher's own writes and closes must never pass through the hooks as if they were the
 * program's. Run with STALLGUARD_METRICS_FILE and a first-byte timer over a second. */
static int fd3_mode(void)
{
    int old = lst;
    open_listener();
    struct pair s;
    s.cli = dial();
    close(old); /* 3 is free again: the connection accepted next takes it */
    s.srv = accept(lst, NULL, NULL);
    if (s.srv != 3) {
        fprintf(stderr, "alias_check fd3: accepted on %d\n", s.srv);
        return 2;
    }
    mark_waiting(s.srv);
    usleep(2500000); /* > first-byte timer (1.5 s) + ticks: two metrics rewrites before it */
    int cut = is_cut(s.cli);
    printf("fd3 guarded=%d fd=%d peer=%d cut=%d\n", guarded, s.srv, port_of(s.cli), cut);
    printf("alias_check fd3: %s\n", cut == guarded ? "ok" : "FAIL");
    return cut == guarded ? 0 : 1;
}

/* Makes pidfd_getfd fail with ENOSYS from now on (seccomp filter): in this thread and the
 * threads it creates, or, with `all_threads`, in every thread of the process (TSYNC). */
static void refuse_pidfd_getfd(int all_threads)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_pidfd_getfd, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (ENOSYS & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) ||
        syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, all_threads ? SECCOMP_FILTER_FLAG_TSYNC : 0,
                &prog))
        die("seccomp");
}

/* `alias_check late_filter`: the program installs a seccomp filter on every thread (TSYNC)
 * after the watcher started: the watcher then takes no copy (a filtered call could kill the
 * process), so a silent client is not cut, and the guard says so. */
static int late_filter_mode(void)
{
    struct pair first = connection(); /* the watcher starts, in a table of its own */
    usleep(200000);
    refuse_pidfd_getfd(1);
    struct pair s = connection();
    mark_waiting(s.srv);
    usleep(700000); /* > first-byte timer + ticks */
    int cut = is_cut(s.cli);
    printf("late_filter guarded=%d cut=%d\n", guarded, cut);
    printf("alias_check late_filter: %s\n", cut == 0 ? "ok" : "FAIL");
    (void)first;
    return cut == 0 ? 0 : 1;
}

/* `alias_check leader_exit`: the main thread ends with pthread_exit while a worker thread
 * (same fd table) accepts a silent client; guarded, it is reaped all the same (the watcher
 * can no longer take copies through the main thread). Prints `leader_exit cut=0|1`. */
static void *leader_exit_worker(void *arg)
{
    (void)arg;
    usleep(100000); /* the main thread is gone by now */
    struct pair s = connection(); /* the first tracked connection: the watcher starts */
    usleep(300000);
    struct pair t = connection();
    mark_waiting(t.srv);
    usleep(700000); /* > first-byte timer + ticks */
    int cut = is_cut(t.cli);
    printf("leader_exit guarded=%d fd=%d peer=%d cut=%d\n", guarded, t.srv, port_of(t.cli), cut);
    int ok = cut == guarded;
    printf("alias_check leader_exit: %s\n", ok ? "ok" : "FAIL");
    (void)s;
    exit(ok ? 0 : 1);
}

static int leader_exit_mode(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, leader_exit_worker, NULL))
        die("pthread_create");
    pthread_exit(NULL);
}

int main(int argc, char **argv)
{
    guarded = shim_loaded();
    setvbuf(stdout, NULL, _IOLBF, 0);
    int fallback = argc > 2 && !strcmp(argv[1], "fallback");
    /* Before the listener: the watcher starts at the first listen() and inherits the filter
     * (as on a kernel without pidfd_getfd). */
    if (fallback)
        refuse_pidfd_getfd(0);
    open_listener();
    if (argc > 1 && !strcmp(argv[1], "unshare"))
        return unshare_mode();
    if (argc > 1 && !strcmp(argv[1], "lowfd"))
        return lowfd_mode();
    if (argc > 1 && !strcmp(argv[1], "late_filter"))
        return late_filter_mode();
    if (argc > 1 && !strcmp(argv[1], "fd3"))
        return fd3_mode();
    if (argc > 1 && !strcmp(argv[1], "leader_exit"))
        return leader_exit_mode();
    if (argc > 2 && !strcmp(argv[1], "split"))
        return split_mode(argv[2], 0);
    if (fallback)
        return split_mode(argv[2], 1);
    printf("alias_check: guarded=%d\n", guarded);
    /* A first connection starts the watcher; let its start-up (which opens files of its own)
     * finish before the rounds count on "lowest free fd" reuse (see lowfd_mode). */
    struct pair warm = connection();
    usleep(300000);

    static const char *paths[] = {"close", "close_range", "fclose", "raw_close", "dup2_onto",
                                  "dup3_onto"};
    struct release rel[40];
    int nr = 0;
    for (size_t p = 0; p < sizeof(paths) / sizeof(*paths); p++)
        for (int k = R_CONN; k <= R_FILE; k++) {
            if (!strncmp(paths[p], "dup", 3) && k != R_CONN && k != R_PIPE)
                continue; /* dup2/dup3 copy an existing object: a connection or a pipe */
            setup_release(&rel[nr++], paths[p], (enum reuse)k);
        }
    static const char *ops[] = {"dup", "fcntl_dupfd", "fcntl_dupfd_cloexec", "dup2_onto_tracked",
                                "dup3_onto_tracked", "dup2_failed", "close_range_cloexec"};
    struct alias al[8];
    int na = 0;
    for (size_t o = 0; o < sizeof(ops) / sizeof(*ops); o++)
        setup_alias(&al[na++], ops[o]);
    /* Last: closefrom (A is the highest fd; the shim's log descriptor goes with it). */
    setup_release(&rel[nr++], "closefrom", R_PIPE);

    /* Hold: healthy traffic on every reused number while the stalled ones are reaped. */
    long end = now_ms() + HOLD_MS;
    while (now_ms() < end) {
        for (int i = 0; i < nr; i++)
            exchange(&rel[i].h);
        usleep(30000);
    }
    for (int i = 0; i < nr; i++)
        finish_slow_wait(&rel[i].h);
    usleep(100000);

    for (int i = 0; i < nr; i++) {
        struct release *r = &rel[i];
        int s_cut = is_cut(r->s.srv) && is_cut(r->s.cli);
        int reused = r->h.fd == r->n;
        int ok = reused && r->h.ok && s_cut == guarded;
        printf("release path=%s reuse=%s n=%d reused=%d late_ms=%ld a_peer=%d r_ok=%d "
               "r_exchanges=%ld r_peer=%d s_fd=%d s_peer=%d s_cut=%d%s\n",
               r->path, reuse_name[r->kind], r->n, reused, r->late_ms, r->a_port, r->h.ok,
               r->h.exchanges, r->h.port, r->s.srv, r->s_port, s_cut, ok ? "" : " FAIL");
        failures += !ok;
    }
    for (int i = 0; i < na; i++) {
        struct alias *a = &al[i];
        int cut = is_cut(a->a.cli);
        int ok = cut == guarded;
        printf("alias op=%s fd=%d a_peer=%d b_peer=%d cut=%d%s\n", a->op, a->fd, a->a_port,
               a->b_port, cut, ok ? "" : " FAIL");
        failures += !ok;
    }
    close(warm.srv);
    close(warm.cli);
    if (failures)
        printf("alias_check: FAIL %d\n", failures);
    else
        printf("alias_check: ok\n");
    return failures ? 1 : 0;
}
