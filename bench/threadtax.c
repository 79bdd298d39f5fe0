/* threadtax: what a second thread costs a single-threaded program's fd syscalls, and why.
 *
 * One pipe write + read of one byte, timed per syscall (the pair / 2), in these process
 * states (each measured in a fresh child, paired rounds interleaved so that outside load
 * spreads over every state):
 *   single        no other thread
 *   shared        one idle pthread sharing the fd table (the watcher before issue 13)
 *   unshared      one idle pthread that called unshare(CLONE_FILES) and closed its copies
 *                 (the watcher now)
 *   rawclone      one idle thread made with a raw clone(CLONE_VM|CLONE_THREAD|...) *without*
 *                 CLONE_FILES and without pthread_create: glibc still believes the process
 *                 is single-threaded (an experiment only: such a thread cannot run libc)
 * and two ways to enter the kernel:
 *   libc          write()/read(): cancellation points; once pthread_create has run, glibc's
 *                 SYSCALL_CANCEL wraps each in __pthread_enable/disable_asynccancel
 *                 (two atomic read-modify-writes on the thread's cancelhandling)
 *   raw           syscall(SYS_write/SYS_read): no cancellation bookkeeping
 * so "unshared raw - single raw" is the kernel's remaining share, and "unshared libc -
 * unshared raw" vs "single libc - single raw" is glibc's.
 *
 * Output: "state <s> entry <e> ns <median> p10 <10th percentile> min <min>" per syscall, of
 * the batches.
 * usage: threadtax [--rounds R] [--calls N] [--sets S]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { SINGLE, SHARED, UNSHARED, RAWCLONE, NSTATES };
static const char *state_name[] = {"single", "shared", "unshared", "rawclone"};

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void *idle_thread(void *unshare_it)
{
    if (unshare_it) {
        if (unshare(CLONE_FILES))
            _exit(3);
        syscall(SYS_close_range, 0U, ~0U, 0);
    }
    for (;;)
        pause();
    return NULL;
}

/* The raw clone'd thread: no libc at all (no TLS, no errno): sleeps in a raw syscall loop. */
static int rawclone_main(void *arg)
{
    (void)arg;
    for (;;)
        syscall(SYS_pause);
    return 0;
}

static void start_state(int state)
{
    pthread_t t;
    if (state == SHARED || state == UNSHARED) {
        if (pthread_create(&t, NULL, idle_thread, state == UNSHARED ? (void *)1 : NULL))
            _exit(3);
    } else if (state == RAWCLONE) {
        size_t sz = 64 * 1024;
        char *stack = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (stack == MAP_FAILED)
            _exit(3);
        int flags = CLONE_VM | CLONE_FS | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM;
        if (clone(rawclone_main, stack + sz, flags, NULL) < 0)
            _exit(3);
    }
    usleep(20000); /* let the thread settle (unshare done) */
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* In a child in `state`: `rounds` batches of `calls` write+read pairs for each entry; writes
 * the per-syscall ns of each batch to `out` (rounds doubles per entry). */
static void measure(int state, int rounds, int calls, double *out)
{
    start_state(state);
    int p[2];
    char c = 'x';
    if (pipe(p))
        _exit(3);
    for (int r = 0; r < rounds; r++) {
        for (int e = 0; e < 2; e++) {
            double t0 = now_ns();
            if (e == 0)
                for (int i = 0; i < calls; i++) {
                    if (write(p[1], &c, 1) != 1 || read(p[0], &c, 1) != 1)
                        _exit(4);
                }
            else
                for (int i = 0; i < calls; i++) {
                    if (syscall(SYS_write, p[1], &c, 1) != 1 || syscall(SYS_read, p[0], &c, 1) != 1)
                        _exit(4);
                }
            out[e * rounds + r] = (now_ns() - t0) / (2.0 * calls);
        }
    }
}

int main(int argc, char **argv)
{
    int rounds = 30, calls = 20000, sets = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--rounds"))
            rounds = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--calls"))
            calls = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--sets"))
            sets = atoi(argv[i + 1]);
    }
    size_t per = (size_t)2 * rounds;
    double *all = mmap(NULL, sizeof(double) * per * NSTATES * sets, PROT_READ | PROT_WRITE,
                       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (all == MAP_FAILED)
        return 1;
    /* Interleave: set after set, every state once per set, each in a fresh child. */
    for (int s = 0; s < sets; s++)
        for (int st = 0; st < NSTATES; st++) {
            pid_t c = fork();
            if (c == 0) {
                measure(st, rounds, calls, all + (size_t)(st * sets + s) * per);
                _exit(0);
            }
            int status;
            waitpid(c, &status, 0);
            if (!WIFEXITED(status) || WEXITSTATUS(status)) {
                fprintf(stderr, "threadtax: state %s failed\n", state_name[st]);
                return 1;
            }
        }
    double *v = malloc(sizeof(double) * rounds * sets);
    for (int st = 0; st < NSTATES; st++)
        for (int e = 0; e < 2; e++) {
            int n = 0;
            for (int s = 0; s < sets; s++)
                for (int r = 0; r < rounds; r++)
                    v[n++] = all[(size_t)(st * sets + s) * per + e * rounds + r];
            qsort(v, n, sizeof(double), cmp);
            printf("state %s entry %s ns %.1f p10 %.1f min %.1f\n", state_name[st],
                   e ? "raw" : "libc", v[n / 2], v[n / 10], v[0]);
        }
    return 0;
}
