/* signal_stress: the shim's hooks must be async-signal-safe and never
 * deadlock.
 *
 * Signal handlers call hooked functions (write, recv, dup, close) on tracked
 * connections while the interrupted threads are themselves inside hooked
 * calls on other tracked connections.  A hook that took a lock, allocated,
 * or kept per-thread state that a handler could re-enter would hang or
 * corrupt data here.
 *
 *   - NIO I/O threads each own one accept()ed (tracked) connection and play
 *     ping-pong with a peer thread: write() a counter, read() it back + 1.
 *   - setitimer(ITIMER_REAL, 200 us) -> SIGALRM (SA_RESTART), delivered to
 *     whichever I/O or peer thread the kernel picks.  The handler write()s a
 *     16-byte record to a tracked connection reserved for it (a reader thread
 *     drains the peer end), write()s one byte to a pipe (drained by another
 *     thread; stderr stays clean), and dup()+close()s that tracked socket.
 *   - the main thread pthread_kill()s SIGUSR1 (SA_RESTART) to the I/O
 *     threads as fast as it can; the handler recv(MSG_DONTWAIT)s on a tracked
 *     connection whose peer never sends (so it must get -1/EAGAIN).
 *
 * After argv[1] seconds (default 5) everything is stopped and joined and the
 * counts are reconciled: every ping-pong value seen exactly once and in
 * order, every handler record and pipe byte received exactly once, no
 * handler call failed, no read/write on a socket returned EINTR (SA_RESTART
 * restarts them).  Output is deterministic: `signal_stress: ok`, or
 * `signal_stress: FAIL detail`; exit 0 iff ok.  (Counts go to stderr with
 * -v.)
 *
 * If anything deadlocks, a watchdog thread (no SIGALRM: the timer owns it)
 * says so on stderr and _exit(3)s after argv[1] + 20 seconds.
 *
 * Under the shim, keep the duration below its first_byte timeout: the quiet
 * connection is waited on and never answered, so a guard may shut it down
 * (its recv then sees EOF, which is tolerated).
 *
 * usage: signal_stress [SECONDS [-v]]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define NIO         4
#define TIMER_US    200
#define REC_MAGIC   0x51a7e5c0u
#define WATCHDOG_SLACK 20

struct rec {
    uint32_t magic;
    uint32_t inv; /* ~seq: a torn or shifted record cannot pass */
    uint64_t seq;
};

struct conn {
    int srv; /* accept()ed: tracked by the shim */
    int cli; /* connect()ed: never tracked */
};

static struct conn io[NIO];  /* ping-pong connections */
static struct conn alarm_c;  /* SIGALRM handler's records */
static struct conn quiet;    /* SIGUSR1 handler's recv: the peer never sends */
static int pipefd[2];        /* SIGALRM handler's bytes */

static int stop_io;          /* set by main: I/O threads finish their round and stop */

/* Handler bookkeeping (lock-free atomics: async-signal-safe). */
static uint64_t alarm_seq, alarm_rec_ok, alarm_rec_err, alarm_rec_torn;
static uint64_t alarm_pipe_ok, alarm_pipe_err, alarm_dup_err;
static uint64_t usr1_calls, usr1_eagain, usr1_eof, usr1_bad, usr1_sent;

#define ADD(v) __atomic_fetch_add(&(v), 1, __ATOMIC_RELAXED)
#define GET(v) __atomic_load_n(&(v), __ATOMIC_RELAXED)

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void fail(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    printf("signal_stress: FAIL %s\n", buf);
    fflush(stdout);
    _exit(1);
}

/* ------------------------------------------------------------------------ */
/* signal handlers: only async-signal-safe calls, errno preserved            */

static void on_alarm(int sig)
{
    (void)sig;
    int saved = errno;

    /* 1. a record on the reserved tracked connection */
    uint64_t seq = __atomic_fetch_add(&alarm_seq, 1, __ATOMIC_RELAXED);
    struct rec r = {REC_MAGIC, ~(uint32_t)seq, seq};
    ssize_t w = write(alarm_c.srv, &r, sizeof(r));
    if (w == (ssize_t)sizeof(r)) {
        ADD(alarm_rec_ok);
    } else if (w > 0) {
        /* Short write (only if the buffer filled up): finish it so the
         * stream stays aligned, but remember it happened. */
        ADD(alarm_rec_torn);
        const char *p = (const char *)&r + w;
        size_t left = sizeof(r) - (size_t)w;
        while (left > 0) {
            w = write(alarm_c.srv, p, left);
            if (w <= 0 && errno != EINTR)
                break;
            if (w > 0) {
                p += w;
                left -= (size_t)w;
            }
        }
        if (left == 0)
            ADD(alarm_rec_ok);
        else
            ADD(alarm_rec_err);
    } else {
        ADD(alarm_rec_err);
    }

    /* 2. a byte on a pipe (where a careless program would write to stderr) */
    char c = 'a';
    if (write(pipefd[1], &c, 1) == 1)
        ADD(alarm_pipe_ok);
    else
        ADD(alarm_pipe_err);

    /* 3. a copy of the tracked socket, made and dropped */
    int d = dup(alarm_c.srv);
    if (d < 0 || close(d) != 0)
        ADD(alarm_dup_err);

    errno = saved;
}

static void on_usr1(int sig)
{
    (void)sig;
    int saved = errno;
    char b[16];
    ssize_t r = recv(quiet.srv, b, sizeof(b), MSG_DONTWAIT);
    if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
        ADD(usr1_eagain);
    else if (r == 0)
        ADD(usr1_eof); /* a guard shut the never-answered connection down */
    else
        ADD(usr1_bad);
    ADD(usr1_calls);
    errno = saved;
}

/* ------------------------------------------------------------------------ */
/* setup                                                                    */

static void tcp_pair(struct conn *c)
{
    const char *failed = loopback_pair(&c->srv, &c->cli, -1);
    if (failed)
        fail("setup: %s: %s", failed, strerror(errno));
}

static void spawn(pthread_t *t, void *(*fn)(void *), void *arg)
{
    int e = pthread_create(t, NULL, fn, arg);
    if (e != 0)
        fail("setup: pthread_create: %s", strerror(e));
}

/* Unblocks sigs in the calling thread. */
static void unblock(int s1, int s2)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, s1);
    if (s2)
        sigaddset(&set, s2);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}

/* ------------------------------------------------------------------------ */
/* ping-pong                                                                */

struct side {
    uint64_t rounds;
    uint64_t next;  /* the value it expected/sent next */
    uint64_t eintr; /* EINTR from a read/write: SA_RESTART should have restarted it */
    char err[160];  /* first problem, "" if none */
};

static struct side io_res[NIO], peer_res[NIO];

/* n bytes exactly (short counts resumed).  Returns n, or the bytes moved
 * before EOF/error (errno kept). */
static size_t xfer(int fd, void *p, size_t n, int writing, uint64_t *eintr)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = writing ? write(fd, (char *)p + done, n - done)
                            : read(fd, (char *)p + done, n - done);
        if (r < 0 && errno == EINTR) {
            (*eintr)++;
            continue;
        }
        if (r <= 0)
            break;
        done += (size_t)r;
    }
    return done;
}

/* I/O thread: sends v, expects v + 1, continues with v + 2. */
static void *io_main(void *arg)
{
    int i = (int)(intptr_t)arg;
    struct side *s = &io_res[i];
    int fd = io[i].srv;
    unblock(SIGALRM, SIGUSR1);
    uint64_t v = 0;
    while (!__atomic_load_n(&stop_io, __ATOMIC_RELAXED)) {
        uint64_t out = v, in = 0;
        if (xfer(fd, &out, 8, 1, &s->eintr) != 8) {
            snprintf(s->err, sizeof(s->err), "io %d: write at round %llu: %s", i,
                     (unsigned long long)s->rounds, strerror(errno));
            break;
        }
        size_t got = xfer(fd, &in, 8, 0, &s->eintr);
        if (got != 8) {
            snprintf(s->err, sizeof(s->err), "io %d: read %zu of 8 at round %llu: %s", i, got,
                     (unsigned long long)s->rounds, got ? "short" : strerror(errno));
            break;
        }
        if (in != v + 1) {
            snprintf(s->err, sizeof(s->err), "io %d: sent %llu, got back %llu", i,
                     (unsigned long long)v, (unsigned long long)in);
            break;
        }
        v += 2;
        s->rounds++;
    }
    s->next = v;
    shutdown(fd, SHUT_WR);
    /* The peer answers our EOF with its own: anything else is a stray byte. */
    char extra[8];
    ssize_t r;
    while ((r = read(fd, extra, sizeof(extra))) < 0 && errno == EINTR)
        s->eintr++;
    if (r != 0 && !s->err[0])
        snprintf(s->err, sizeof(s->err), "io %d: %zd bytes after the last round", i, r);
    return NULL;
}

/* Peer thread: expects 0, 2, 4, ... and answers each + 1. */
static void *peer_main(void *arg)
{
    int i = (int)(intptr_t)arg;
    struct side *s = &peer_res[i];
    int fd = io[i].cli;
    unblock(SIGALRM, 0);
    uint64_t want = 0;
    for (;;) {
        uint64_t in = 0;
        size_t got = xfer(fd, &in, 8, 0, &s->eintr);
        if (got == 0)
            break; /* EOF: the I/O thread stopped */
        if (got != 8) {
            snprintf(s->err, sizeof(s->err), "peer %d: read %zu of 8 at round %llu", i, got,
                     (unsigned long long)s->rounds);
            break;
        }
        if (in != want) {
            snprintf(s->err, sizeof(s->err), "peer %d: expected %llu, got %llu", i,
                     (unsigned long long)want, (unsigned long long)in);
            break;
        }
        uint64_t out = in + 1;
        if (xfer(fd, &out, 8, 1, &s->eintr) != 8) {
            snprintf(s->err, sizeof(s->err), "peer %d: write at round %llu: %s", i,
                     (unsigned long long)s->rounds, strerror(errno));
            break;
        }
        want += 2;
        s->rounds++;
    }
    s->next = want;
    shutdown(fd, SHUT_WR);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* drains                                                                   */

struct rec_result {
    uint64_t count, sum, sumsq; /* seq checks: a permutation of 0..count-1 */
    char err[160];
};
static struct rec_result recs;

static void *rec_reader(void *arg)
{
    (void)arg;
    unsigned char buf[4096 + sizeof(struct rec)];
    size_t have = 0;
    for (;;) {
        ssize_t r = read(alarm_c.cli, buf + have, 4096);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(recs.err, sizeof(recs.err), "record reader: %s", strerror(errno));
            return NULL;
        }
        if (r == 0)
            break;
        have += (size_t)r;
        size_t off = 0;
        for (; have - off >= sizeof(struct rec); off += sizeof(struct rec)) {
            struct rec x;
            memcpy(&x, buf + off, sizeof(x));
            if (x.magic != REC_MAGIC || x.inv != ~(uint32_t)x.seq) {
                if (!recs.err[0])
                    snprintf(recs.err, sizeof(recs.err), "corrupt handler record #%llu",
                             (unsigned long long)recs.count);
                continue;
            }
            recs.count++;
            recs.sum += x.seq;
            recs.sumsq += x.seq * x.seq;
        }
        memmove(buf, buf + off, have - off);
        have -= off;
    }
    if (have && !recs.err[0])
        snprintf(recs.err, sizeof(recs.err), "%zu stray bytes after the last record", have);
    return NULL;
}

static uint64_t pipe_bytes;

static void *pipe_reader(void *arg)
{
    (void)arg;
    char buf[4096];
    for (;;) {
        ssize_t r = read_retry(pipefd[0], buf, sizeof(buf));
        if (r <= 0)
            break;
        pipe_bytes += (uint64_t)r;
    }
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* watchdog: no signals, no hooked calls on its way out                      */

static long deadline_s;

static void *watchdog(void *arg)
{
    (void)arg;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_sec += deadline_s;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, NULL) == EINTR)
        ;
    /* Raw syscall: if a hook is wedged, libc's write may be too. */
    static const char msg[] = "signal_stress: deadlock: still running at the watchdog deadline\n";
    long r = syscall(SYS_write, 2, msg, sizeof(msg) - 1);
    (void)r;
    _exit(3);
}

/* ------------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long secs = 5;
    int verbose = 0;
    if (argc > 1) {
        char *end;
        secs = strtol(argv[1], &end, 10);
        if (*end || secs < 1 || secs > 3600) {
            fprintf(stderr, "usage: signal_stress [SECONDS (1-3600, default 5) [-v]]\n");
            return 2;
        }
    }
    if (argc > 2 && !strcmp(argv[2], "-v"))
        verbose = 1;
    deadline_s = secs + WATCHDOG_SLACK;

    /* Every thread starts with both signals blocked; the I/O and peer
     * threads open them for themselves.  The readers must never run the
     * SIGALRM handler: its write would wait on the very thread that drains
     * it. */
    sigset_t both;
    sigemptyset(&both);
    sigaddset(&both, SIGALRM);
    sigaddset(&both, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &both, NULL);

    pthread_t wd;
    spawn(&wd, watchdog, NULL);

    for (int i = 0; i < NIO; i++)
        tcp_pair(&io[i]);
    tcp_pair(&alarm_c);
    tcp_pair(&quiet);
    if (pipe(pipefd) != 0)
        fail("setup: pipe: %s", strerror(errno));

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask); /* handlers may nest: more interleavings */
    sa.sa_handler = on_alarm;
    if (sigaction(SIGALRM, &sa, NULL) != 0)
        fail("setup: sigaction: %s", strerror(errno));
    sa.sa_handler = on_usr1;
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        fail("setup: sigaction: %s", strerror(errno));

    pthread_t rr, pr, iot[NIO], peert[NIO];
    spawn(&rr, rec_reader, NULL);
    spawn(&pr, pipe_reader, NULL);
    for (int i = 0; i < NIO; i++) {
        spawn(&peert[i], peer_main, (void *)(intptr_t)i);
        spawn(&iot[i], io_main, (void *)(intptr_t)i);
    }

    struct itimerval it = {{0, TIMER_US}, {0, TIMER_US}};
    if (setitimer(ITIMER_REAL, &it, NULL) != 0)
        fail("setup: setitimer: %s", strerror(errno));

    /* SIGUSR1 to the I/O threads, as fast as we can, until the time is up. */
    double end = now_s() + (double)secs;
    while (now_s() < end) {
        for (int i = 0; i < NIO; i++)
            if (pthread_kill(iot[i], SIGUSR1) == 0)
                ADD(usr1_sent);
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }

    /* Stop: timer off, I/O threads finish their round, then everyone else.
     * Once the I/O and peer threads are joined no thread can run a handler
     * any more (all others block both signals), so the counts are final. */
    struct itimerval off;
    memset(&off, 0, sizeof(off));
    setitimer(ITIMER_REAL, &off, NULL);
    __atomic_store_n(&stop_io, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < NIO; i++) {
        pthread_join(iot[i], NULL);
        pthread_join(peert[i], NULL);
    }
    shutdown(alarm_c.srv, SHUT_WR);
    close(pipefd[1]);
    pthread_join(rr, NULL);
    pthread_join(pr, NULL);

    if (verbose) {
        uint64_t rounds = 0;
        for (int i = 0; i < NIO; i++)
            rounds += io_res[i].rounds;
        fprintf(stderr,
                "signal_stress: %ld s: pingpong rounds=%llu sigalrm=%llu records=%llu "
                "pipe_bytes=%llu sigusr1 sent=%llu handled=%llu eagain=%llu eof=%llu\n",
                secs, (unsigned long long)rounds, (unsigned long long)GET(alarm_seq),
                (unsigned long long)recs.count, (unsigned long long)pipe_bytes,
                (unsigned long long)GET(usr1_sent), (unsigned long long)GET(usr1_calls),
                (unsigned long long)GET(usr1_eagain), (unsigned long long)GET(usr1_eof));
    }

    /* ping-pong: no error, both sides agree on every round */
    for (int i = 0; i < NIO; i++) {
        struct side *a = &io_res[i], *b = &peer_res[i];
        if (a->err[0])
            fail("%s", a->err);
        if (b->err[0])
            fail("%s", b->err);
        if (a->rounds == 0)
            fail("io %d: no ping-pong round completed", i);
        if (a->rounds != b->rounds || a->next != b->next || a->next != 2 * a->rounds)
            fail("io %d: %llu rounds (next %llu) but the peer counted %llu (next %llu)", i,
                 (unsigned long long)a->rounds, (unsigned long long)a->next,
                 (unsigned long long)b->rounds, (unsigned long long)b->next);
        if (a->eintr || b->eintr)
            fail("io %d: %llu+%llu reads/writes failed with EINTR despite SA_RESTART", i,
                 (unsigned long long)a->eintr, (unsigned long long)b->eintr);
    }

    /* SIGALRM handler: every call's record and byte arrived exactly once */
    uint64_t n = GET(alarm_seq);
    if (n == 0)
        fail("the SIGALRM handler never ran");
    if (GET(alarm_rec_err) || GET(alarm_pipe_err) || GET(alarm_dup_err))
        fail("SIGALRM handler: %llu record writes, %llu pipe writes, %llu dup/close failed",
             (unsigned long long)GET(alarm_rec_err), (unsigned long long)GET(alarm_pipe_err),
             (unsigned long long)GET(alarm_dup_err));
    if (GET(alarm_rec_torn))
        fail("SIGALRM handler: %llu short record writes", (unsigned long long)GET(alarm_rec_torn));
    if (recs.err[0])
        fail("%s", recs.err);
    uint64_t sum = 0, sumsq = 0;
    for (uint64_t s = 0; s < n; s++) {
        sum += s;
        sumsq += s * s;
    }
    if (recs.count != n || GET(alarm_rec_ok) != n || recs.sum != sum || recs.sumsq != sumsq)
        fail("SIGALRM handler ran %llu times, wrote %llu records, reader got %llu%s",
             (unsigned long long)n, (unsigned long long)GET(alarm_rec_ok),
             (unsigned long long)recs.count,
             recs.count == n ? " (wrong sequence numbers)" : "");
    if (pipe_bytes != n || GET(alarm_pipe_ok) != n)
        fail("SIGALRM handler ran %llu times, pipe got %llu bytes", (unsigned long long)n,
             (unsigned long long)pipe_bytes);

    /* SIGUSR1 handler: ran, and its recv only ever saw "nothing there" */
    if (GET(usr1_calls) == 0)
        fail("the SIGUSR1 handler never ran");
    if (GET(usr1_bad))
        fail("SIGUSR1 handler: %llu recv calls returned data or an error other than EAGAIN",
             (unsigned long long)GET(usr1_bad));

    /* the quiet connection is intact (or was shut down by a guard: EOF) */
    char b;
    ssize_t r = recv(quiet.srv, &b, 1, MSG_DONTWAIT);
    if (!((r == -1 && errno == EAGAIN) || r == 0))
        fail("quiet connection: recv returned %zd (%s)", r, r < 0 ? strerror(errno) : "data");

    printf("signal_stress: ok\n");
    return 0;
}
