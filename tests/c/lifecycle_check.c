/* lifecycle_check: process and thread life under the shim.
 *
 * Each scenario runs real process-life operations around accepted (tracked) loopback
 * connections and checks, in every process involved:
 *   - the watcher: how many threads named "stallguard" the process has (/proc/self/task/N/comm):
 *     exactly one in a guarded process that owns connections or listens on TCP, none in a
 *     process that did neither (unguarded: none anywhere);
 *   - that it works there: a connection whose client says nothing and that the process waits
 *     on (a blocking read) is cut (read returns 0) within the first-byte timer plus slack when
 *     guarded, and is not cut when unguarded (a receive timeout ends the wait);
 *   - no deadlock: every child has an alarm(); a child killed by SIGALRM deadlocked. The whole
 *     program has a watchdog thread that exits 3.
 *
 * Scenarios: no_connection, first_accept, threads (8 threads accept at once and exit, 20
 * short-lived ones), cancel (pthread_cancel of a thread blocked in read, recv, readv, recvmsg,
 * poll, accept, and in a write the peer never drains; cleanup handlers run), prefork (children
 * accept on an inherited listener; the parent listens, never accepts, and has its watcher), fork_storm (64 forks from two
 * threads while other threads do I/O on tracked sockets and the watcher is reaping), system
 * (system() while reaping), popen (the shell's own watcher count and shim presence), daemon
 * (daemon() from a process that owns connections), exec_chain (STALLGUARD_* and LD_PRELOAD
 * inherited through 3 execs, the connection handed over on fd 0 as inetd does).
 *
 * With --hold it then keeps a set of processes alive, prints one `hold pid=P role=R
 * watchers=N` line for each and `hold: ready`, and waits for a line on stdin, so a test can
 * read /proc itself. Output: `lifecycle: NAME ok ...` / `lifecycle: NAME FAIL ...` lines and
 * finally `lifecycle_check: ok` (exit 0) or `lifecycle_check: FAIL N` (exit 1).
 *
 * Under the shim run it with a short first-byte timer (it expects STALLGUARD_FIRST_BYTE <= 1s).
 *
 * usage: lifecycle_check [--hold]
 *        lifecycle_check --exec-step N OUTFD EXPECT_FIRST_BYTE   (internal: one exec-chain step)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

static int out_fd = 1;  /* where report lines go (a private dup of stdout) */
static int guarded;     /* the shim is mapped into this process */
static int failures;
static const char *self_exe = "/proc/self/exe";

/* ------------------------------------------------------------------ helpers */

static void say(const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    ssize_t w = write(out_fd, line, (size_t)n); /* one write: lines of processes never mix */
    (void)w;
}

static void result(const char *name, int ok, const char *fmt, ...)
{
    char detail[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    say("lifecycle: %s %s %s", name, ok ? "ok" : "FAIL", detail);
    if (!ok)
        failures++;
}

/* Threads named "stallguard" in process pid (0: this one). */
static int watchers_of(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", pid ? pid : getpid());
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[400], comm[32] = "";
        snprintf(p, sizeof(p), "%.63s/%.255s/comm", path, e->d_name);
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t r = read(fd, comm, sizeof(comm) - 1);
        close(fd);
        if (r > 0 && !strncmp(comm, "stallguard\n", 11))
            n++;
    }
    closedir(d);
    return n;
}

/* The watcher starts asynchronously: wait up to 5 s for it to appear (or confirm absence). A
   sanitizer build of a forked child on a loaded 2-core machine once took over 2 s; a watcher
   that never starts still fails. */
static int watchers_settled(int expect)
{
    int n = watchers_of(0);
    for (long end = now_ms() + 5000; n != expect && now_ms() < end; n = watchers_of(0))
        usleep(10000);
    return n;
}

static int listener(unsigned short *port)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 256) ||
        getsockname(l, (struct sockaddr *)&sa, &sl)) {
        perror("lifecycle_check: listener");
        exit(2);
    }
    *port = ntohs(sa.sin_port);
    return l;
}

static int dial(unsigned short port)
{
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa))) {
        perror("lifecycle_check: connect");
        exit(2);
    }
    return c;
}

/* A tracked connection (server side) and its silent client; the server fd is not CLOEXEC. */
struct pair {
    int srv, cli;
};

static struct pair connection(int l, unsigned short port)
{
    struct pair p;
    p.cli = dial(port);
    p.srv = accept(l, NULL, NULL);
    if (p.srv < 0) {
        perror("lifecycle_check: accept");
        exit(2);
    }
    return p;
}

static struct pair fresh_connection(void)
{
    unsigned short port;
    int l = listener(&port);
    struct pair p = connection(l, port);
    close(l);
    return p;
}

/* Waits on fd with a blocking read. 1: cut (EOF or reset), 0: still open when the receive
 * timeout ended the wait, -1: data arrived or another error. */
static int wait_cut(int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char b[64];
    ssize_t r;
    do
        r = read(fd, b, sizeof(b));
    while (r < 0 && errno == EINTR);
    if (r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE)))
        return 1;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    return -1;
}

/* How long to wait for a reap: generous when guarded, short when unguarded (nothing comes). */
static int reap_wait_ms(void)
{
    return guarded ? 6000 : 400;
}

static int expect_cut(void)
{
    return guarded ? 1 : 0;
}

static const char *cut_word(int c)
{
    return c == 1 ? "cut" : c == 0 ? "open" : "error";
}

/* Child exit codes: 0 ok; 20+ a failed check; killed by SIGALRM: deadlock. */
static const char *status_text(int st, char *buf, size_t n)
{
    if (WIFEXITED(st))
        snprintf(buf, n, "exit=%d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, n, "signal=%d%s", WTERMSIG(st), WTERMSIG(st) == SIGALRM ? "(deadlock)" : "");
    else
        snprintf(buf, n, "status=%d", st);
    return buf;
}

static void *watchdog(void *arg)
{
    (void)arg;
    sleep(150);
    say("lifecycle_check: FAIL watchdog: the program hung");
    _exit(3);
}

/* ------------------------------------------------------------------ scenarios */

static void s_no_connection(void)
{
    int w = watchers_of(0);
    pid_t c = fork();
    if (c == 0) {
        alarm(20);
        _exit(watchers_of(0) == 0 ? 0 : 20);
    }
    int st;
    waitpid(c, &st, 0);
    char b[64];
    result("no_connection", w == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "watchers=%d child=%s", w, status_text(st, b, sizeof(b)));
}

static void s_first_accept(void)
{
    struct pair p = fresh_connection();
    int w = watchers_settled(guarded);
    int cut = wait_cut(p.srv, reap_wait_ms());
    result("first_accept", w == guarded && cut == expect_cut(), "watchers=%d silent_client=%s", w,
           cut_word(cut));
    close(p.srv);
    close(p.cli);
}

/* --- threads: several accept at once and exit; the watcher outlives them */
static int th_listener;
static unsigned short th_port;
static int th_fds[8];

static void *accept_and_exit(void *arg)
{
    long i = (long)arg;
    th_fds[i] = accept(th_listener, NULL, NULL);
    pthread_exit(NULL);
}

static void *accept_close(void *arg)
{
    (void)arg;
    int fd = accept(th_listener, NULL, NULL);
    char b[4];
    if (fd >= 0) {
        ssize_t r = recv(fd, b, sizeof(b), MSG_DONTWAIT);
        (void)r;
        close(fd);
    }
    return NULL;
}

static void s_threads(void)
{
    th_listener = listener(&th_port);
    int clients[28];
    pthread_t t[8];
    for (long i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, accept_and_exit, (void *)i);
    for (int i = 0; i < 8; i++)
        clients[i] = dial(th_port);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    int w1 = watchers_settled(guarded);
    for (int i = 0; i < 20; i++) {
        pthread_t s;
        pthread_create(&s, NULL, accept_close, NULL);
        clients[8 + i] = dial(th_port);
        pthread_join(s, NULL);
    }
    int w2 = watchers_of(0);
    /* The watcher still guards what the exited threads accepted. An EAGAIN read on each first
     * starts all their first-byte clocks at once. */
    int cuts = 0;
    char b[4];
    for (int i = 0; i < 8; i++)
        if (recv(th_fds[i], b, sizeof(b), MSG_DONTWAIT) >= 0)
            cuts -= 100; /* nobody sent anything */
    for (int i = 0; i < 8; i++)
        cuts += wait_cut(th_fds[i], reap_wait_ms()) == 1;
    result("threads", w1 == guarded && w2 == guarded && cuts == 8 * expect_cut(),
           "watchers_after_exits=%d watchers_after_20_more=%d cut=%d/8", w1, w2, cuts);
    for (int i = 0; i < 8; i++)
        close(th_fds[i]);
    for (int i = 0; i < 28; i++)
        close(clients[i]);
    close(th_listener);
}

/* --- cancel: pthread_cancel of threads blocked inside hooked calls */
enum blocker { B_READ, B_RECV, B_READV, B_RECVMSG, B_POLL, B_ACCEPT, B_WRITE, B_COUNT };
static const char *blocker_name[] = {"read", "recv", "readv", "recvmsg", "poll", "accept", "write"};

struct cancel_arg {
    enum blocker kind;
    int fd;
    volatile int entered, cleaned;
};

static void cleanup(void *a)
{
    ((struct cancel_arg *)a)->cleaned = 1;
}

static void *blocked(void *arg)
{
    struct cancel_arg *a = arg;
    char b[256];
    static char big[1 << 16];
    struct iovec iov = {b, sizeof(b)};
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    struct pollfd pf = {a->fd, POLLIN, 0};
    pthread_cleanup_push(cleanup, a);
    a->entered = 1;
    switch (a->kind) {
    case B_READ:
        if (read(a->fd, b, sizeof(b)) < 0)
            break;
        break;
    case B_RECV:
        if (recv(a->fd, b, sizeof(b), 0) < 0)
            break;
        break;
    case B_READV:
        if (readv(a->fd, &iov, 1) < 0)
            break;
        break;
    case B_RECVMSG:
        if (recvmsg(a->fd, &mh, 0) < 0)
            break;
        break;
    case B_POLL:
        poll(&pf, 1, -1);
        break;
    case B_ACCEPT:
        accept(a->fd, NULL, NULL);
        break;
    case B_WRITE:
        for (;;) /* the peer never reads: blocks once the buffers are full */
            if (write(a->fd, big, sizeof(big)) < 0)
                break;
        break;
    default:
        break;
    }
    pthread_cleanup_pop(0);
    return (void *)1;
}

static void s_cancel(void)
{
    int ok_all = 1;
    char detail[512] = "";
    for (int k = 0; k < B_COUNT; k++) {
        struct pair p = {-1, -1};
        unsigned short port;
        int l = -1;
        struct cancel_arg a = {.kind = (enum blocker)k};
        if (k == B_ACCEPT) {
            l = listener(&port);
            a.fd = l;
        } else {
            p = fresh_connection();
            a.fd = p.srv;
            if (k == B_WRITE) {
                int small = 4096;
                setsockopt(p.cli, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
                setsockopt(p.srv, SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
            }
        }
        pthread_t t;
        pthread_create(&t, NULL, blocked, &a);
        while (!a.entered)
            usleep(1000);
        usleep(80000); /* well inside the call, well before any timer */
        pthread_cancel(t);
        void *res = NULL;
        pthread_join(t, &res);
        int ok = res == PTHREAD_CANCELED && a.cleaned;
        /* The hooks on this fd still work after the unwinding: a fresh silent client on the
         * same number is still judged and cut. */
        int cut = -2;
        if (k != B_ACCEPT) {
            int num = p.srv;
            close(p.srv);
            close(p.cli);
            struct pair q = fresh_connection();
            cut = wait_cut(q.srv, reap_wait_ms());
            ok = ok && cut == expect_cut();
            (void)num;
            close(q.srv);
            close(q.cli);
        } else {
            close(l);
        }
        size_t used = strlen(detail);
        snprintf(detail + used, sizeof(detail) - used, "%s%s=%s%s", used ? " " : "",
                 blocker_name[k], ok ? "canceled" : "FAILED",
                 cut == -2 ? "" : cut == expect_cut() ? "" : "(no_reap_after)");
        ok_all &= ok;
    }
    int w = watchers_of(0);
    result("cancel", ok_all && w == guarded, "%s watchers=%d", detail, w);
}

/* --- prefork: children accept on an inherited listener; the parent never accepts, but it
 * listened: a server, with its watcher (its start line and live view) from then on */
static void s_prefork(void)
{
    pid_t before = 0;
    (void)before;
    /* Run in a fresh child that has never accepted: it plays the prefork parent. */
    int rep[2];
    if (pipe(rep))
        exit(2);
    pid_t master = fork();
    if (master == 0) {
        alarm(40);
        close(rep[0]);
        unsigned short port;
        int l = listener(&port);
        pid_t kids[4];
        for (int i = 0; i < 4; i++) {
            kids[i] = fork();
            if (kids[i] == 0) {
                alarm(30);
                int fd = accept(l, NULL, NULL);
                int w = watchers_settled(guarded);
                int cut = wait_cut(fd, reap_wait_ms());
                _exit(w != guarded ? 20 : cut != expect_cut() ? 21 : 0);
            }
        }
        int cl[4];
        for (int i = 0; i < 4; i++)
            cl[i] = dial(port);
        usleep(100000);
        int wparent = watchers_of(0);
        int bad = 0;
        char b[64], detail[256] = "";
        for (int i = 0; i < 4; i++) {
            int st;
            waitpid(kids[i], &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                bad++;
                size_t u = strlen(detail);
                snprintf(detail + u, sizeof(detail) - u, " child%d:%s", i,
                         status_text(st, b, sizeof(b)));
            }
        }
        for (int i = 0; i < 4; i++)
            close(cl[i]);
        char msg[512];
        int n = snprintf(msg, sizeof(msg), "%d %d%s", wparent, bad, detail);
        if (write(rep[1], msg, (size_t)n) < 0)
            _exit(22);
        _exit(0);
    }
    close(rep[1]);
    char msg[512] = "";
    ssize_t r = read(rep[0], msg, sizeof(msg) - 1);
    close(rep[0]);
    int st;
    waitpid(master, &st, 0);
    int wparent = -1, bad = -1;
    char rest[400] = "";
    if (r > 0) {
        msg[r] = 0;
        sscanf(msg, "%d %d%399[^\n]", &wparent, &bad, rest);
    }
    char b[64];
    result("prefork", wparent == guarded && bad == 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "parent_watchers=%d children_failed=%d%s master=%s", wparent, bad, rest,
           status_text(st, b, sizeof(b)));
}

/* --- fork storm: forks from two threads while others do tracked I/O and the watcher reaps */
static volatile int storm_stop;
static int storm_fail;

static void *pingpong(void *arg)
{
    (void)arg;
    struct pair p = fresh_connection();
    char b[8];
    long n = 0;
    while (!storm_stop) {
        if (write(p.cli, "ping", 4) != 4 || read(p.srv, b, 4) != 4 || write(p.srv, "pong", 4) != 4 ||
            read(p.cli, b, 4) != 4) {
            __atomic_fetch_add(&storm_fail, 1, __ATOMIC_RELAXED);
            break;
        }
        n++;
    }
    close(p.srv);
    close(p.cli);
    return (void *)n;
}

static void *reaping(void *arg)
{
    (void)arg;
    long cuts = 0;
    while (!storm_stop) {
        struct pair p = fresh_connection();
        cuts += wait_cut(p.srv, guarded ? 3000 : 50) == 1;
        close(p.srv);
        close(p.cli);
    }
    return (void *)cuts;
}

static void storm_child(void)
{
    alarm(20); /* a deadlocked child dies of SIGALRM */
    /* It inherited tracked connections: it must run a watcher of its own, which must work. */
    int w = watchers_settled(guarded);
    if (w != guarded)
        _exit(20);
    struct pair p = fresh_connection();
    int cut = wait_cut(p.srv, reap_wait_ms());
    close(p.srv);
    close(p.cli);
    if (cut != expect_cut())
        _exit(21);
    if (watchers_of(0) != guarded)
        _exit(22);
    _exit(0);
}

struct forker {
    int count;
    pid_t pids[32];
};

static void *forker(void *arg)
{
    struct forker *f = arg;
    for (int i = 0; i < f->count; i++) {
        pid_t c = fork();
        if (c == 0)
            storm_child();
        f->pids[i] = c;
        usleep(2000);
    }
    return NULL;
}

static void s_fork_storm(void)
{
    storm_stop = 0;
    pthread_t io[2], reaper, fk[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&io[i], NULL, pingpong, NULL);
    pthread_create(&reaper, NULL, reaping, NULL);
    usleep(guarded ? 400000 : 50000); /* the watcher is busy reaping by now */
    struct forker f[2] = {{.count = 32}, {.count = 32}};
    long t0 = now_ms();
    for (int i = 0; i < 2; i++)
        pthread_create(&fk[i], NULL, forker, &f[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(fk[i], NULL);
    int ok = 0, deadlocked = 0, other = 0;
    char first_bad[64] = "";
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < f[i].count; j++) {
            int st;
            if (f[i].pids[j] < 0) {
                other++;
                continue;
            }
            waitpid(f[i].pids[j], &st, 0);
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
                ok++;
            else if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
                deadlocked++;
            else {
                other++;
                if (!first_bad[0])
                    status_text(st, first_bad, sizeof(first_bad));
            }
        }
    long took = now_ms() - t0;
    storm_stop = 1;
    void *r;
    long pings = 0;
    for (int i = 0; i < 2; i++) {
        pthread_join(io[i], &r);
        pings += (long)r;
    }
    pthread_join(reaper, &r);
    long cuts = (long)r;
    int w = watchers_of(0);
    result("fork_storm",
           ok == 64 && deadlocked == 0 && storm_fail == 0 && w == guarded &&
               (guarded ? cuts > 0 : cuts == 0),
           "children_ok=%d/64 deadlocked=%d failed=%d%s%s io_errors=%d parent_reaps=%s watchers=%d "
           "ms=%ld",
           ok, deadlocked, other, first_bad[0] ? " first_failure=" : "", first_bad, storm_fail,
           cuts > 0 ? "yes" : "no", w, took);
    (void)pings;
}

/* --- system() and popen(): the shell is preloaded too and owns no connection */
static void s_system(void)
{
    storm_stop = 0;
    pthread_t reaper;
    pthread_create(&reaper, NULL, reaping, NULL);
    int good = 0;
    for (int i = 0; i < 20; i++) {
        int st = system("exit 7");
        good += WIFEXITED(st) && WEXITSTATUS(st) == 7;
    }
    storm_stop = 1;
    pthread_join(reaper, NULL);
    result("system", good == 20, "exit_status_7=%d/20", good);
}

static void s_popen(void)
{
    /* The shell prints its own watcher count and whether the shim is mapped into it. */
    FILE *f = popen("n=0; for t in /proc/$$/task/*/comm; do read c < $t; "
                    "[ \"$c\" = stallguard ] && n=$((n+1)); done; "
                    "[ -n \"$LD_PRELOAD\" ] && grep -qF \"${LD_PRELOAD##*/}\" /proc/$$/maps "
                    "&& s=1 || s=0; echo \"$n $s\"",
                    "r");
    int n = -1, s = -1;
    if (f) {
        if (fscanf(f, "%d %d", &n, &s) != 2)
            n = s = -1;
    }
    int st = f ? pclose(f) : -1;
    /* and a writer: popen("w") into a child that counts bytes */
    FILE *w = popen("wc -c > /dev/null", "w");
    int wrote = 0;
    if (w) {
        for (int i = 0; i < 1000; i++)
            wrote += fputs("0123456789abcdef", w) >= 0;
    }
    int wst = w ? pclose(w) : -1;
    result("popen", n == 0 && s == guarded && st == 0 && wst == 0 && wrote == 1000,
           "shell_watchers=%d shell_has_shim=%d status=%d writer_status=%d", n, s, st, wst);
}

/* --- daemon(): a process that owns connections daemonizes */
static pid_t daemon_pid;
static int daemon_ctl = -1;

static void s_daemon(int hold)
{
    int rep[2], ctl[2];
    if (pipe2(rep, O_CLOEXEC) || pipe2(ctl, O_CLOEXEC))
        exit(2);
    struct pair keep = fresh_connection(); /* owned before daemon(): inherited by the daemon */
    struct pair silent = fresh_connection();
    pid_t main_pid = getpid();
    pid_t mid = fork();
    if (mid == 0) {
        close(rep[0]);
        close(ctl[1]);
        alarm(30);
        if (daemon(1, 0) < 0) /* forks again; stdio onto /dev/null with dup2 */
            _exit(20);
        alarm(0);
        /* Once reparented to the subreaper (main), die with it. */
        for (int i = 0; i < 3000 && getppid() != main_pid; i++)
            usleep(1000);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int w = watchers_settled(guarded);
        int cut = wait_cut(silent.srv, reap_wait_ms());
        char msg[128];
        int n = snprintf(msg, sizeof(msg), "%d %d %d %d", (int)getpid(), (int)getsid(0), w, cut);
        if (write(rep[1], msg, (size_t)n) < 0)
            _exit(21);
        close(rep[1]);
        char b;
        ssize_t r = read(ctl[0], &b, 1); /* held until the controller closes ctl */
        (void)r;
        close(keep.srv);
        _exit(0);
    }
    close(rep[1]);
    close(ctl[0]);
    int st;
    waitpid(mid, &st, 0); /* the intermediate process exits inside daemon() */
    char msg[128] = "";
    ssize_t r = read(rep[0], msg, sizeof(msg) - 1);
    close(rep[0]);
    int pid = -1, sid = -1, w = -1, cut = -1;
    if (r > 0) {
        msg[r] = 0;
        sscanf(msg, "%d %d %d %d", &pid, &sid, &w, &cut);
    }
    int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0 && pid > 0 && sid == pid && w == guarded &&
             cut == expect_cut();
    result("daemon", ok, "new_session=%s watchers=%d silent_client=%s", sid == pid ? "yes" : "no",
           w, cut_word(cut));
    daemon_pid = pid;
    daemon_ctl = ctl[1];
    close(keep.srv);
    close(silent.srv);
    close(silent.cli);
    if (!hold) {
        close(daemon_ctl); /* let it go */
        daemon_ctl = -1;
    }
    /* keep.cli stays open while the daemon holds its end */
}

/* --- exec chain: the connection on fd 0 (inetd style), STALLGUARD_* and LD_PRELOAD inherited */
static int exec_step(int step, int fd_out, const char *expect_fb)
{
    out_fd = fd_out;
    guarded = shim_loaded();
    const char *fb = getenv("STALLGUARD_FIRST_BYTE");
    int env_ok = !strcmp(fb ? fb : "-", expect_fb);
    const char *pre = getenv("LD_PRELOAD");
    int pre_ok = guarded == (pre && *pre);
    int w = watchers_settled(guarded); /* the connection on fd 0 is adopted at start */
    say("exec_step %d pid=%d env=%s shim=%d watchers=%d", step, (int)getpid(),
        env_ok && pre_ok ? "inherited" : "LOST", guarded, w);
    if (step > 0) {
        char s[16], o[16];
        snprintf(s, sizeof(s), "%d", step - 1);
        snprintf(o, sizeof(o), "%d", fd_out);
        execl(self_exe, "lifecycle_check", "--exec-step", s, o, expect_fb, (char *)NULL);
        say("exec_step %d exec failed: %s", step, strerror(errno));
        return 20;
    }
    /* The last image waits on the client with hooked reads: it is cut when guarded. */
    int cut = wait_cut(0, reap_wait_ms());
    say("exec_step end cut=%d", cut);
    return cut == expect_cut() ? 0 : 21;
}

static void s_exec_chain(void)
{
    int rep[2];
    if (pipe(rep))
        exit(2);
    struct pair p = fresh_connection();
    const char *fb = getenv("STALLGUARD_FIRST_BYTE");
    pid_t c = fork();
    if (c == 0) {
        alarm(30);
        close(rep[0]);
        dup2(p.srv, 0);
        close(p.srv);
        char o[16];
        snprintf(o, sizeof(o), "%d", rep[1]);
        execl(self_exe, "lifecycle_check", "--exec-step", "3", o, fb ? fb : "-", (char *)NULL);
        _exit(22);
    }
    close(rep[1]);
    close(p.srv);
    char buf[2048];
    size_t len = 0;
    ssize_t r;
    while (len < sizeof(buf) - 1 && (r = read(rep[0], buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)r;
    buf[len] = 0;
    close(rep[0]);
    int st;
    waitpid(c, &st, 0);
    int steps = 0, inherited = 0, shim = 0, watch_ok = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        int step, pid, sh, w;
        char env[16];
        if (sscanf(line, "exec_step %d pid=%d env=%15s shim=%d watchers=%d", &step, &pid, env, &sh,
                   &w) == 5) {
            steps++;
            inherited += !strcmp(env, "inherited");
            shim += sh == guarded;
            watch_ok += w == guarded;
        }
    }
    char b[64];
    result("exec_chain",
           steps == 4 && inherited == 4 && shim == 4 && watch_ok == 4 && WIFEXITED(st) &&
               WEXITSTATUS(st) == 0,
           "images=%d env_inherited=%d shim_loaded=%d watchers_ok=%d last=%s", steps, inherited,
           shim, watch_ok, status_text(st, b, sizeof(b)));
    close(p.cli);
}

/* --- hold: processes kept alive for the test to inspect /proc */
struct held {
    pid_t pid;
    const char *role;
    int expect;
};

static pid_t hold_child(int owns_connection, int ctl_read)
{
    pid_t c = fork();
    if (c == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* Keep only the control pipe's read end (as fd 0): every write end the parent holds
         * must close for the EOF that releases us. */
        dup2(ctl_read, 0);
        close_range(3, ~0U, 0);
        if (owns_connection) { /* this process accepts a connection itself */
            struct pair p = fresh_connection();
            (void)p;
        }
        char b;
        ssize_t r = read(0, &b, 1);
        (void)r;
        _exit(0);
    }
    return c;
}

static pid_t hold_exec(int ctl_read)
{
    /* A preloaded program exec'd from here that owns nothing (the shell, waiting on the pipe). */
    pid_t c = fork();
    if (c == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(ctl_read, 0);
        close_range(3, ~0U, 0);
        execl("/bin/sh", "sh", "-c", "read x", (char *)NULL);
        _exit(22);
    }
    return c;
}

static void hold_phase(void)
{
    int ctl[2];
    if (pipe2(ctl, O_CLOEXEC))
        exit(2);
    struct held h[8];
    int n = 0;
    h[n++] = (struct held){getpid(), "main", guarded};
    /* children forked from a process with connections, one of which later accepts */
    h[n++] = (struct held){hold_child(1, ctl[0]), "child_with_connection", guarded};
    h[n++] = (struct held){hold_child(0, ctl[0]), "child_no_connection", 0};
    h[n++] = (struct held){hold_exec(ctl[0]), "exec_shell_no_connection", 0};
    if (daemon_pid > 0)
        h[n++] = (struct held){daemon_pid, "daemon", guarded};
    usleep(300000);
    for (int i = 0; i < n; i++)
        say("hold pid=%d role=%s watchers=%d", (int)h[i].pid, h[i].role, h[i].expect);
    say("hold: ready");
    char line[16];
    ssize_t r = read(0, line, sizeof(line)); /* the test says go (or closes stdin) */
    (void)r;
    close(ctl[1]);
    if (daemon_ctl >= 0)
        close(daemon_ctl);
    for (int i = 1; i < n; i++) {
        int st;
        if (h[i].pid > 0 && strcmp(h[i].role, "daemon"))
            waitpid(h[i].pid, &st, 0);
    }
    close(ctl[0]);
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "--exec-step"))
        return exec_step(atoi(argv[2]), atoi(argv[3]), argv[4]);
    int hold = argc > 1 && !strcmp(argv[1], "--hold");
    out_fd = fcntl(1, F_DUPFD_CLOEXEC, 10);
    guarded = shim_loaded();
    prctl(PR_SET_CHILD_SUBREAPER, 1); /* daemons reparent to us: we can wait for them */
    pthread_t wd;
    pthread_create(&wd, NULL, watchdog, NULL);
    say("lifecycle: mode guarded=%d", guarded);

    s_no_connection();
    s_prefork(); /* before this process ever accepts */
    s_first_accept();
    s_threads();
    s_cancel();
    s_fork_storm();
    s_system();
    s_popen();
    s_exec_chain();
    s_daemon(hold);
    if (hold)
        hold_phase();
    /* Reap the daemon (reparented to us) and anything else left. */
    for (long end = now_ms() + 5000; now_ms() < end;) {
        pid_t p = waitpid(-1, NULL, WNOHANG);
        if (p < 0)
            break;
        if (p == 0)
            usleep(10000);
    }
    if (failures)
        say("lifecycle_check: FAIL %d", failures);
    else
        say("lifecycle_check: ok");
    return failures ? 1 : 0;
}
