/* hookbench: cost per call of the hooked I/O functions, with and without libstallguard.so.
 *
 * It opens a loopback listener and two connections to it:
 *   T  accepted with libc accept()            -> tracked when the shim is preloaded
 *   U  accepted with the raw accept4 syscall  -> never tracked (the hook does not see it)
 * so "tracked" and "untracked socket" run the very same kernel path, and the difference
 * between them is the shim's bookkeeping alone. Pipes, a regular file, /dev/null and
 * pread() (not interposed: a control) complete the set.
 *
 * Each case is one bench_<case>() function that makes exactly `n` calls of one kind and
 * nothing else (the untimed refill / drain around it is outside), so
 *   - timing mode: clock_gettime around each batch of `n` calls, per-batch ns/call, the
 *     median, 10th percentile and minimum over the batches are printed per case;
 *   - callgrind mode (--callgrind): run under
 *       valgrind --tool=callgrind --collect-atstart=no --toggle-collect='bench_*'
 *     and the inclusive Ir of bench_<case> divided by the number of calls is the
 *     instruction count per call (user space: the hook plus the libc wrapper).
 *
 * --idle-thread starts one thread that only sleeps, as the shim's watcher does: once a
 * process has a second thread its descriptor table is shared, and the kernel then takes a
 * reference on the file in every fd-based syscall (fdget's slow path) and the f_pos lock
 * for reads/writes of regular files. Running "no shim + idle thread" separates that kernel
 * effect of *any* second thread from the cost of the hooks themselves.
 *
 * Output: one line per case, "case <name> median_ns <x> min_ns <y> calls <n> p10_ns <z>"
 * (statistics of the per-batch ns/call; calls includes the warm-up batches), then
 * "watcher <0|1>" (1: a thread named "stallguard" exists, i.e. T is tracked).
 *
 * usage: hookbench [--batches B] [--batch K] [--callgrind] [--idle-thread] [--only SUBSTR]
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noipa, noinline))
#define MAXBATCH 256

static char buf[4096];
static const char byte = 'x';

/* The descriptors every case uses. */
static int srv_t, cli_t, srv_u, cli_u, pipe_rd, pipe_wr, file_fd, null_fd;

static void die(const char *what)
{
    fprintf(stderr, "hookbench: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* ---- the measured functions: n calls each, nothing else ---------------------------- */

#define CASE_FN(name, expr)                                                                \
    static NOINLINE long bench_##name(int fd, int n)                                       \
    {                                                                                      \
        long sum = 0;                                                                      \
        for (int i = 0; i < n; i++)                                                        \
            sum += (expr);                                                                 \
        return sum;                                                                        \
    }

CASE_FN(sock_read_tracked, read(fd, buf, 1))
CASE_FN(sock_read_untracked, read(fd, buf, 1))
CASE_FN(sock_recv_tracked, recv(fd, buf, 1, 0))
CASE_FN(sock_recv_untracked, recv(fd, buf, 1, 0))
CASE_FN(sock_write_tracked, write(fd, &byte, 1))
CASE_FN(sock_write_untracked, write(fd, &byte, 1))
CASE_FN(sock_send_tracked, send(fd, &byte, 1, 0))
CASE_FN(sock_send_untracked, send(fd, &byte, 1, 0))
CASE_FN(sock_eagain_tracked, read(fd, buf, 1))
CASE_FN(sock_eagain_untracked, read(fd, buf, 1))
CASE_FN(sock_sendfile_tracked, sendfile(fd, file_fd, &(off_t){0}, 1))
CASE_FN(sock_sendfile_untracked, sendfile(fd, file_fd, &(off_t){0}, 1))
CASE_FN(pipe_read, read(fd, buf, 1))
CASE_FN(pipe_write, write(fd, &byte, 1))
CASE_FN(file_read, read(fd, buf, 1))
CASE_FN(file_pread_nohook, pread(fd, buf, 1, 0))
CASE_FN(null_write, write(fd, &byte, 1))

/* ---- untimed preparation and cleanup around one batch ---------------------------- */

/* Waits until `fd` has at least `n` bytes queued for reading. */
static void wait_readable(int fd, int n)
{
    for (int spins = 0;; spins++) {
        int q = 0;
        if (ioctl(fd, FIONREAD, &q) < 0)
            die("FIONREAD");
        if (q >= n)
            return;
        if (spins > 1000000) {
            fprintf(stderr, "hookbench: data never arrived (%d of %d)\n", q, n);
            exit(1);
        }
        sched_yield();
    }
}

/* Reads exactly n bytes from a blocking fd. */
static void drain(int fd, int n)
{
    while (n > 0) {
        ssize_t r = read(fd, buf, n < (int)sizeof buf ? (size_t)n : sizeof buf);
        if (r <= 0)
            die("drain");
        n -= (int)r;
    }
}

static void put(int fd, int n)
{
    memset(buf, 'y', (size_t)n);
    if (write(fd, buf, (size_t)n) != n)
        die("refill");
}

static void fill_t(int n) { put(cli_t, n); wait_readable(srv_t, n); }
static void fill_u(int n) { put(cli_u, n); wait_readable(srv_u, n); }
static void fill_pipe(int n) { put(pipe_wr, n); }
static void rewind_file(int n) { (void)n; if (lseek(file_fd, 0, SEEK_SET) != 0) die("lseek"); }
static void drain_t(int n) { drain(cli_t, n); }
static void drain_u(int n) { drain(cli_u, n); }
static void drain_pipe(int n) { drain(pipe_rd, n); }

struct bench_case {
    const char *name;
    long (*fn)(int, int);
    int *fd;
    void (*before)(int);
    void (*after)(int);
    int expect; /* each call returns this */
    int expect_errno;
    double *ns; /* per-batch ns/call */
};

#define C(name, fdp, before, after, expect, err) \
    { #name, bench_##name, fdp, before, after, expect, err, NULL }

static struct bench_case cases[] = {
    C(sock_read_tracked, &srv_t, fill_t, NULL, 1, 0),
    C(sock_read_untracked, &srv_u, fill_u, NULL, 1, 0),
    C(sock_recv_tracked, &srv_t, fill_t, NULL, 1, 0),
    C(sock_recv_untracked, &srv_u, fill_u, NULL, 1, 0),
    C(sock_write_tracked, &srv_t, NULL, drain_t, 1, 0),
    C(sock_write_untracked, &srv_u, NULL, drain_u, 1, 0),
    C(sock_send_tracked, &srv_t, NULL, drain_t, 1, 0),
    C(sock_send_untracked, &srv_u, NULL, drain_u, 1, 0),
    C(sock_eagain_tracked, &srv_t, NULL, NULL, -1, EAGAIN),
    C(sock_eagain_untracked, &srv_u, NULL, NULL, -1, EAGAIN),
    C(sock_sendfile_tracked, &srv_t, NULL, drain_t, 1, 0),
    C(sock_sendfile_untracked, &srv_u, NULL, drain_u, 1, 0),
    C(pipe_read, &pipe_rd, fill_pipe, NULL, 1, 0),
    C(pipe_write, &pipe_wr, NULL, drain_pipe, 1, 0),
    C(file_read, &file_fd, rewind_file, NULL, 1, 0),
    C(file_pread_nohook, &file_fd, NULL, NULL, 1, 0),
    C(null_write, &null_fd, NULL, NULL, 1, 0),
};
#define NCASES (sizeof cases / sizeof cases[0])

/* ---- setup ---------------------------------------------------------------------- */

static void nodelay(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0)
        die("TCP_NODELAY");
}

static void nonblocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        die("O_NONBLOCK");
}

static int connect_to(int lfd)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    if (getsockname(lfd, (struct sockaddr *)&a, &len) < 0)
        die("getsockname");
    int c = socket(AF_INET, SOCK_STREAM, 0);
    if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof a) < 0)
        die("connect");
    nodelay(c);
    return c;
}

static void setup(void)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 8) < 0)
        die("listen");

    cli_t = connect_to(lfd);
    srv_t = accept(lfd, NULL, NULL); /* through the hook: tracked */
    if (srv_t < 0)
        die("accept");
    cli_u = connect_to(lfd);
    srv_u = (int)syscall(SYS_accept4, lfd, NULL, NULL, 0); /* bypasses the hook */
    if (srv_u < 0)
        die("accept4 syscall");
    close(lfd);
    for (int i = 0; i < 2; i++) {
        int s = i ? srv_u : srv_t;
        nodelay(s);
        nonblocking(s); /* EAGAIN case; writes of a batch never fill the buffer */
    }

    int p[2];
    if (pipe(p) < 0)
        die("pipe");
    pipe_rd = p[0];
    pipe_wr = p[1];

    char path[] = "/tmp/hookbench.XXXXXX";
    file_fd = mkstemp(path);
    if (file_fd < 0)
        die("mkstemp");
    unlink(path);
    memset(buf, 'f', sizeof buf);
    for (int i = 0; i < 16; i++)
        if (write(file_fd, buf, sizeof buf) != (ssize_t)sizeof buf)
            die("file");
    null_fd = open("/dev/null", O_WRONLY);
    if (null_fd < 0)
        die("/dev/null");
}

/* 1 if this process has a thread named "stallguard" (the shim's watcher). */
static int watcher_running(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int found = 0;
    if (!d)
        return 0;
    while (!found && (e = readdir(d))) {
        char p[300], name[64] = "";
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(p, "r");
        if (f) {
            if (fgets(name, sizeof name, f) && strncmp(name, "stallguard", 10) == 0)
                found = 1;
            fclose(f);
        }
    }
    closedir(d);
    return found;
}

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void run_batch(struct bench_case *c, int k, double *out)
{
    if (c->before)
        c->before(k);
    errno = 0;
    double t0 = now_ns();
    long sum = c->fn(*c->fd, k);
    double t1 = now_ns();
    if (sum != (long)c->expect * k || (c->expect_errno && errno != c->expect_errno)) {
        fprintf(stderr, "hookbench: %s: unexpected result %ld (errno %d)\n", c->name, sum, errno);
        exit(1);
    }
    if (c->after)
        c->after(k);
    if (out)
        *out = (t1 - t0) / k;
}

int main(int argc, char **argv)
{
    int batches = 400, k = 64, callgrind = 0, idle_thread = 0;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batches") && i + 1 < argc)
            batches = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            k = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--callgrind"))
            callgrind = 1;
        else if (!strcmp(argv[i], "--idle-thread"))
            idle_thread = 1;
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            only = argv[++i];
        else {
            fprintf(stderr, "usage: hookbench [--batches B] [--batch K] [--callgrind] [--idle-thread] [--only S]\n");
            return 2;
        }
    }
    if (batches < 1 || k < 1 || k > MAXBATCH) {
        fprintf(stderr, "hookbench: need batches >= 1 and 1 <= batch <= %d\n", MAXBATCH);
        return 2;
    }
    setup();
    if (idle_thread) {
        pthread_t t;
        if (pthread_create(&t, NULL, sleeper, NULL) != 0)
            die("pthread_create");
        pthread_detach(t);
    }
    for (size_t c = 0; c < NCASES; c++)
        if (!(cases[c].ns = calloc((size_t)batches, sizeof(double))))
            die("calloc");

    /* Warm-up (not recorded), then the batches round-robin over the cases, so that a burst
     * of outside load spreads over every case instead of landing on one. */
    int warm = callgrind ? 1 : 20;
    for (int b = 0; b < warm; b++)
        for (size_t c = 0; c < NCASES; c++)
            if (!only || strstr(cases[c].name, only))
                run_batch(&cases[c], k, NULL);
    for (int b = 0; b < batches; b++)
        for (size_t c = 0; c < NCASES; c++)
            if (!only || strstr(cases[c].name, only))
                run_batch(&cases[c], k, &cases[c].ns[b]);

    for (size_t c = 0; c < NCASES; c++) {
        if (only && !strstr(cases[c].name, only))
            continue;
        qsort(cases[c].ns, (size_t)batches, sizeof(double), cmp_double);
        printf("case %s median_ns %.2f min_ns %.2f calls %ld p10_ns %.2f\n", cases[c].name,
               cases[c].ns[batches / 2], cases[c].ns[0], (long)(batches + warm) * k,
               cases[c].ns[batches / 10]);
    }
    printf("watcher %d\n", watcher_running());
    printf("threads %d\n", 1 + idle_thread + watcher_running());
    return 0;
}
