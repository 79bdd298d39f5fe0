/* single_thread_check: a program with no thread of its own, whose cancellable calls the shim
 * makes as system calls itself (src/abi/route.rs), then the same program once it has a thread.
 *
 * Runs single-threaded (no watchdog thread: alarm() ends a hang, exit by SIGALRM) and prints
 * one deterministic line per step, compared by tests/single_threaded.rs with a run without
 * the shim:
 *   errors   read/write/readv/writev/recv/send/recvfrom/sendto/recvmsg/sendmsg/accept/
 *            accept4/connect/close/poll on pipes and loopback sockets (the accepted ones are
 *            tracked under the shim): results and errno (EAGAIN, EBADF, ENOTSOCK, EPIPE with
 *            SIGPIPE ignored, ECONNREFUSED, EINVAL for a poll count over RLIMIT_NOFILE), and a
 *            fortified read (__read_chk);
 *   eintr    a handler without SA_RESTART interrupts a blocked read, recv, accept, poll: EINTR;
 *   restart  a handler with SA_RESTART: the blocked call goes on and returns what the
 *            handler made available (read, readv, recv, recvfrom, recvmsg, accept, write on a
 *            full pipe, poll: EINTR regardless). The handler also says whether the blocked
 *            call ran with asynchronous cancellation on (`async=1`), which only glibc's
 *            wrapper does, and only in a process glibc knows to have threads: without the
 *            shim 0; under the shim 0 only if it made the system call itself;
 *   self_cancel  a forked child cancels itself, then reads: the read acts on the
 *            cancellation (the child ends, exit 0, without printing);
 *   threads  then a thread is created (C11 thrd_create, which glibc does not route through
 *            pthread_create's PLT entry): the restart probe again (now async=1 either way);
 *            then a reader thread (pthread_create);
 *   fork_child  a child forked now (its parent has threads) repeats the read and recv
 *            probes. Without the shim glibc 2.36 keeps its multi-threaded wrappers in such a
 *            child (`__libc_single_threaded` stays false); under the shim the calls are
 *            direct again: this line differs on purpose and the test checks it apart;
 *   threads: cancelled  a thread blocked in read on a tracked socket is cancelled and
 *            joined, its cleanup handler run;
 *   fork_child_after_cancel  the same probes in a child forked after that: the shim keeps
 *            glibc's wrappers in a process that ever cancelled a thread, and in its children
 *            (async=1 either way).
 * The last line is `single_thread_check: ok`.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <threads.h>
#include <unistd.h>

static int failures;

static void die(const char *what)
{
    fprintf(stderr, "single_thread_check: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* "name=r" or "name=-1/ENAME" */
static void show(const char *name, long r)
{
    int e = errno;
    if (r < 0)
        printf(" %s=-1/%s", name, strerrorname_np(e));
    else
        printf(" %s=%ld", name, r);
    errno = e;
}

static void expect(int ok, const char *what)
{
    if (!ok) {
        printf(" FAIL(%s)", what);
        failures++;
    }
}

/* ------------------------------------------------------------------ sockets */

static struct sockaddr_in listen_addr;

static int listener(int nonblocking)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    int l = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0), 0);
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 8) ||
        getsockname(l, (struct sockaddr *)&listen_addr, &len))
        die("listener");
    return l;
}

static int connect_to_listener(int flags)
{
    int c = socket(AF_INET, SOCK_STREAM | flags, 0);
    if (c < 0)
        return -1;
    int r = connect(c, (struct sockaddr *)&listen_addr, sizeof listen_addr);
    if (r < 0 && errno != EINPROGRESS)
        return -1;
    return c;
}

/* An accepted (tracked under the shim) connection *srv and its client *cli. */
static void pair(int *srv, int *cli)
{
    int l = listener(0);
    *cli = connect_to_listener(0);
    *srv = accept(l, NULL, NULL);
    if (*cli < 0 || *srv < 0)
        die("pair");
    close(l);
}

/* ------------------------------------------------------------------ errors */

static void step_errors(void)
{
    char buf[64];
    int p[2];
    printf("errors pipe:");
    if (pipe2(p, O_NONBLOCK))
        die("pipe");
    show("write", write(p[1], "hello", 5));
    show("read", read(p[0], buf, 3));
    struct iovec iov = {buf, sizeof buf};
    show("readv", readv(p[0], &iov, 1));
    show("read_empty", read(p[0], buf, 1));
    expect(errno == EAGAIN, "EAGAIN");
    struct iovec out[2] = {{"ab", 2}, {"cde", 3}};
    show("writev", writev(p[1], out, 2));
    /* Fortified: the size is not known at compile time, the buffer's is (__read_chk). */
    volatile size_t n = 4;
    char small[8];
    show("read_chk", read(p[0], small, n));
    show("recv_pipe", recv(p[0], buf, 1, 0));
    expect(errno == ENOTSOCK, "ENOTSOCK");
    close(p[0]);
    show("write_no_reader", write(p[1], "x", 1));
    expect(errno == EPIPE, "EPIPE");
    close(p[1]);
    show("read_closed", read(p[0], buf, 1));
    expect(errno == EBADF, "EBADF");
    show("write_closed", write(p[1], "x", 1));
    show("close_closed", close(p[1]));
    show("read_minus1", read(-1, buf, 1));
    printf("\n");

    printf("errors socket:");
    int srv, cli;
    pair(&srv, &cli);
    fcntl(srv, F_SETFL, O_NONBLOCK);
    show("recv_empty", recv(srv, buf, sizeof buf, 0));
    expect(errno == EAGAIN, "EAGAIN");
    show("read_empty", read(srv, buf, sizeof buf));
    show("send", send(cli, "abc", 3, 0));
    struct pollfd pf = {srv, POLLIN, 0};
    show("poll", poll(&pf, 1, 5000));
    show("recv", recv(srv, buf, 1, 0));
    show("recv_peek", recv(srv, buf, 8, MSG_PEEK));
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    show("recvfrom", recvfrom(srv, buf, 8, 0, (struct sockaddr *)&from, &flen));
    show("sendto", sendto(srv, "xyz", 3, 0, NULL, 0));
    show("write", write(srv, "12", 2));
    struct iovec wv[2] = {{"q", 1}, {"rs", 2}};
    struct msghdr wm = {.msg_iov = wv, .msg_iovlen = 2};
    show("sendmsg", sendmsg(srv, &wm, 0));
    show("writev", writev(srv, wv, 2));
    pf.fd = cli;
    show("poll_cli", poll(&pf, 1, 5000));
    /* A count above RLIMIT_NOFILE: the kernel says EINVAL without reading the array, here one
     * entry at the very end of a mapping (the shim read past it and died of SIGSEGV). */
    struct rlimit nofile;
    getrlimit(RLIMIT_NOFILE, &nofile);
    char *pages = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (pages == MAP_FAILED || munmap(pages + 4096, 4096) != 0)
        die("mmap");
    struct pollfd *last = (struct pollfd *)(pages + 4096) - 1;
    *last = pf;
    show("poll_over_limit", poll(last, nofile.rlim_cur + 1, 0));
    expect(errno == EINVAL, "EINVAL");
    munmap(pages, 4096);
    usleep(20000); /* all eleven bytes arrived */
    struct iovec rv = {buf, 5};
    struct msghdr rm = {.msg_iov = &rv, .msg_iovlen = 1};
    show("recvmsg", recvmsg(cli, &rm, 0));
    struct iovec rv2 = {buf, sizeof buf};
    show("readv", readv(cli, &rv2, 1));
    show("shutdown", shutdown(srv, SHUT_WR));
    show("send_after_shutdown", send(srv, "x", 1, 0));
    expect(errno == EPIPE, "EPIPE");
    show("recv_eof", recv(cli, buf, sizeof buf, 0));
    show("close", close(srv));
    show("recv_closed", recv(srv, buf, 1, 0));
    expect(errno == EBADF, "EBADF");
    close(cli);

    int l = listener(1);
    show("accept_empty", accept(l, NULL, NULL));
    expect(errno == EAGAIN, "EAGAIN");
    int c = connect_to_listener(0);
    usleep(20000);
    int a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
    show("accept4", a >= 0 ? 0 : -1);
    show("accept4_cloexec", a >= 0 ? fcntl(a, F_GETFD) & FD_CLOEXEC : -1);
    close(a);
    close(c);
    close(l);
    show("accept_closed", accept(l, NULL, NULL));
    /* Nothing listens there any more. */
    c = socket(AF_INET, SOCK_STREAM, 0);
    show("connect_refused", connect(c, (struct sockaddr *)&listen_addr, sizeof listen_addr));
    expect(errno == ECONNREFUSED, "ECONNREFUSED");
    close(c);
    printf("\n");
}

/* ------------------------------------------------------------------ signals */

static volatile sig_atomic_t firings, seen_async, unblock_at;
static int probe_kind; /* what the handler does at the firing that unblocks */
static int probe_fd, probe_extra = -1;

enum { UNBLOCK_WRITE, UNBLOCK_CONNECT, UNBLOCK_DRAIN };

static void probe_handler(int sig)
{
    (void)sig;
    int e = errno;
    int old;
    /* Whether the interrupted code runs with asynchronous cancellation (glibc's wrapper in
     * a multi-threaded process), restored at once. */
    pthread_setcanceltype(PTHREAD_CANCEL_DEFERRED, &old);
    if (old == PTHREAD_CANCEL_ASYNCHRONOUS)
        pthread_setcanceltype(PTHREAD_CANCEL_ASYNCHRONOUS, NULL);
    seen_async = old == PTHREAD_CANCEL_ASYNCHRONOUS;
    if (++firings == unblock_at) {
        char drain[16384];
        switch (probe_kind) {
        case UNBLOCK_WRITE:
            if (write(probe_fd, "!", 1) != 1)
                _exit(4);
            break;
        case UNBLOCK_CONNECT:
            probe_extra = connect_to_listener(SOCK_NONBLOCK);
            break;
        case UNBLOCK_DRAIN:
            if (read(probe_fd, drain, sizeof drain) <= 0)
                _exit(4);
            break;
        }
    }
    errno = e;
}

static void timer(int ms)
{
    struct itimerval t = {{0, ms * 1000}, {0, ms * 1000}};
    setitimer(ITIMER_REAL, &t, NULL);
}

static void arm(int restart, int kind, int fd, int at)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = probe_handler;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGALRM, &sa, NULL);
    firings = 0;
    seen_async = 0;
    probe_kind = kind;
    probe_fd = fd;
    unblock_at = at;
    timer(15);
}

static void disarm(void)
{
    timer(0);
    signal(SIGALRM, SIG_DFL);
    alarm(60); /* the hang guard again (setitimer took ITIMER_REAL) */
}

/* Which call blocks in a probe. */
enum { P_READ, P_READV, P_RECV, P_RECVFROM, P_RECVMSG, P_ACCEPT, P_WRITE, P_POLL };
static const char *const probe_names[] = {"read", "readv", "recv", "recvfrom",
                                          "recvmsg", "accept", "write", "poll"};

/* Blocks in `call` until a SIGALRM handler (SA_RESTART or not) acts at its third firing. */
static void probe(int call, int restart)
{
    char buf[16];
    int p[2], srv = -1, cli = -1, l = -1, fd, kind = UNBLOCK_WRITE, wfd;
    long r;
    if (pipe(p))
        die("pipe");
    fd = p[0];
    wfd = p[1];
    if (call == P_RECV || call == P_RECVFROM || call == P_RECVMSG) {
        pair(&srv, &cli);
        fd = srv;
        wfd = cli;
    } else if (call == P_ACCEPT) {
        l = listener(0);
        fd = l;
        kind = UNBLOCK_CONNECT;
    } else if (call == P_WRITE) {
        /* Fill the pipe, then block writing: the handler drains it. */
        fcntl(p[1], F_SETFL, O_NONBLOCK);
        static char fill[65536];
        while (write(p[1], fill, sizeof fill) > 0)
            ;
        fcntl(p[1], F_SETFL, 0);
        fd = p[1];
        wfd = p[0];
        kind = UNBLOCK_DRAIN;
    }
    struct iovec iov = {buf, sizeof buf};
    struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1};
    struct pollfd pf = {fd, POLLIN, 0};
    arm(restart, kind, wfd, 3);
    switch (call) {
    case P_READ: r = read(fd, buf, sizeof buf); break;
    case P_READV: r = readv(fd, &iov, 1); break;
    case P_RECV: r = recv(fd, buf, sizeof buf, 0); break;
    case P_RECVFROM: r = recvfrom(fd, buf, sizeof buf, 0, NULL, NULL); break;
    case P_RECVMSG: r = recvmsg(fd, &m, 0); break;
    case P_ACCEPT: r = accept(fd, NULL, NULL); if (r >= 0) { close((int)r); r = 0; } break;
    case P_WRITE: r = write(fd, "w", 1); break;
    default: r = poll(&pf, 1, -1); break;
    }
    int e = errno;
    disarm();
    errno = e;
    show(probe_names[call], r);
    printf("/async=%d", (int)seen_async);
    if (restart && call != P_POLL)
        expect(r >= 0 && firings >= 3, "restarted");
    else
        expect(r < 0 && errno == EINTR, "EINTR");
    close(p[0]);
    close(p[1]);
    if (srv >= 0) close(srv);
    if (cli >= 0) close(cli);
    if (l >= 0) close(l);
    if (probe_extra >= 0) close(probe_extra);
    probe_extra = -1;
}

static void step_eintr(void)
{
    printf("eintr:");
    int calls[] = {P_READ, P_RECV, P_ACCEPT, P_POLL};
    for (unsigned i = 0; i < sizeof calls / sizeof calls[0]; i++)
        probe(calls[i], 0);
    printf("\n");
}

static void step_restart(const char *label)
{
    printf("%s:", label);
    for (int call = P_READ; call <= P_POLL; call++)
        probe(call, 1);
    printf("\n");
}

/* ------------------------------------------------------------------ cancellation */

static void step_self_cancel(void)
{
    int p[2];
    if (pipe(p))
        die("pipe");
    if (write(p[1], "z", 1) != 1)
        die("write");
    fflush(stdout);
    pid_t c = fork();
    if (c < 0)
        die("fork");
    if (c == 0) {
        char b;
        pthread_cancel(pthread_self());
        ssize_t r = read(p[0], &b, 1); /* a cancellation point: the child ends here */
        printf("self_cancel: read=%zd NOT CANCELLED\n", r);
        fflush(stdout);
        _exit(5);
    }
    int st;
    waitpid(c, &st, 0);
    printf("self_cancel: child_exit=%d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st));
    expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "cancelled");
    close(p[0]);
    close(p[1]);
}

static int cancel_fd;
static volatile int cleanup_ran;

static void cleanup(void *arg)
{
    (void)arg;
    cleanup_ran = 1;
}

static void *blocked_reader(void *arg)
{
    (void)arg;
    char b[8];
    pthread_cleanup_push(cleanup, NULL);
    ssize_t r = read(cancel_fd, b, sizeof b);
    printf("threads: read returned %zd NOT CANCELLED\n", r);
    pthread_cleanup_pop(0);
    return NULL;
}

static int sleeper(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return 0;
}

static pthread_t reader;
static int reader_srv, reader_cli;

static void step_threads(void)
{
    /* A C11 thread that only exists (SIGALRM blocked in it, so the probes' handler runs on
     * the main thread), then the probe again: now a program with threads. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    thrd_t t;
    if (thrd_create(&t, sleeper, NULL) != thrd_success)
        die("thrd_create");
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    step_restart("threads restart");
    /* And a thread blocked in read on a tracked socket, to be cancelled. */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pair(&reader_srv, &reader_cli);
    cancel_fd = reader_srv;
    if (pthread_create(&reader, NULL, blocked_reader, NULL))
        die("pthread_create");
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void step_cancel(void)
{
    usleep(50000); /* the reader is blocked in read by now */
    pthread_cancel(reader);
    void *res = NULL;
    pthread_join(reader, &res);
    printf("threads: cancelled=%d cleanup=%d\n", res == PTHREAD_CANCELED, cleanup_ran);
    expect(res == PTHREAD_CANCELED && cleanup_ran, "cancel");
    close(reader_srv);
    close(reader_cli);
}

static void step_fork_child(const char *label)
{
    fflush(stdout);
    pid_t c = fork();
    if (c < 0)
        die("fork");
    if (c == 0) {
        printf("%s:", label);
        probe(P_READ, 1);
        probe(P_RECV, 1);
        printf("\n");
        fflush(stdout);
        _exit(failures ? 1 : 0);
    }
    int st;
    waitpid(c, &st, 0);
    expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork child");
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    alarm(60);
    step_errors();
    step_eintr();
    step_restart("restart");
    step_self_cancel();
    step_threads();
    step_fork_child("fork_child");
    step_cancel();
    step_fork_child("fork_child_after_cancel");
    if (failures) {
        printf("single_thread_check: FAIL %d\n", failures);
        return 1;
    }
    printf("single_thread_check: ok\n");
    return 0;
}
