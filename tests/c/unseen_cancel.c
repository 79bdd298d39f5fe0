/* unseen_cancel: a thread blocked in read(2) on a tracked loopback socket is cancelled by a
 * thread the program never created through pthread_create's PLT entry, and the cancel acts at
 * once, as without the shim (src/abi/route.rs: the direct system call is taken only while
 * glibc's own thread count says the caller is alone besides the shim's watcher).
 *
 *   unseen_cancel timer     timer_create(SIGEV_THREAD): glibc's helper thread runs the callback
 *   unseen_cancel mq        mq_notify(SIGEV_THREAD): likewise for a message queue
 *   unseen_cancel aio       aio_read with a SIGEV_THREAD completion: POSIX AIO's threads
 *   unseen_cancel gai       getaddrinfo_a(GAI_NOWAIT, SIGEV_THREAD): its resolver threads
 *   unseen_cancel deepbind PLUGIN
 *                           a plugin dlopen'ed with RTLD_DEEPBIND (its pthread_create and
 *                           pthread_cancel bind to libc first) cancels the main thread, then
 *                           writes a byte 0.2 s later (a call that ignored the cancel returns)
 *
 * The callback (or plugin thread) waits 0.2 s, so the main thread is blocked in read by then,
 * and cancels it; the cleanup handler prints `unseen_cancel MODE: cancelled` and exits 0. A
 * read that returns prints what it got and exits 1; a hang ends by SIGALRM after 5 s (the
 * process dies of the signal: never a hung test).
 */
#define _GNU_SOURCE
#include <aio.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <mqueue.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include "harness.h"

static pthread_t main_thread;
static const char *mode = "";

static void die(const char *what)
{
    fprintf(stderr, "unseen_cancel %s: %s: %s\n", mode, what, strerror(errno));
    exit(2);
}

static void cancel_main(union sigval v)
{
    (void)v;
    usleep(200000);
    pthread_cancel(main_thread);
}

/* A line on stdout through the system call itself (no cancellation point). */
static void say(const char *what, ssize_t n)
{
    char line[128];
    int len = snprintf(line, sizeof line, "unseen_cancel %s: %s: %zd\n", mode, what, n);
    if (syscall(SYS_write, 1, line, (size_t)len) != len)
        _exit(3);
}

static void cleanup(void *arg)
{
    (void)arg;
    char line[64];
    int n = snprintf(line, sizeof line, "unseen_cancel %s: cancelled\n", mode);
    if (write_all(1, line, (size_t)n) != 0)
        _exit(3);
    _exit(0);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return fprintf(stderr, "usage: unseen_cancel timer|mq|aio|gai|deepbind PLUGIN\n"), 2;
    mode = argv[1];
    int srv, cli;
    const char *failed = loopback_pair(&srv, &cli, -1);
    if (failed)
        die(failed);
    main_thread = pthread_self();
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD;
    sev.sigev_notify_function = cancel_main;

    if (!strcmp(mode, "timer")) {
        timer_t t;
        struct itimerspec its = {.it_value = {0, 1000000}};
        if (timer_create(CLOCK_MONOTONIC, &sev, &t) != 0 || timer_settime(t, 0, &its, NULL) != 0)
            die("timer_create");
    } else if (!strcmp(mode, "mq")) {
        char name[64];
        snprintf(name, sizeof name, "/stallguard-unseen-%d", (int)getpid());
        struct mq_attr at = {.mq_maxmsg = 4, .mq_msgsize = 8};
        mqd_t q = mq_open(name, O_CREAT | O_EXCL | O_RDWR, 0600, &at);
        if (q == (mqd_t)-1)
            die("mq_open");
        mq_unlink(name);
        if (mq_notify(q, &sev) != 0 || mq_send(q, "x", 1, 0) != 0)
            die("mq_notify");
    } else if (!strcmp(mode, "aio")) {
        static char byte[1];
        static struct aiocb cb;
        int p[2];
        if (pipe(p) != 0 || write_all(p[1], "x", 1) != 0)
            die("pipe");
        cb.aio_fildes = p[0];
        cb.aio_buf = byte;
        cb.aio_nbytes = 1;
        cb.aio_sigevent = sev;
        if (aio_read(&cb) != 0)
            die("aio_read");
    } else if (!strcmp(mode, "gai")) {
        static struct gaicb req = {.ar_name = "localhost"};
        static struct gaicb *list[1] = {&req};
        if (getaddrinfo_a(GAI_NOWAIT, list, 1, &sev) != 0)
            die("getaddrinfo_a");
    } else if (!strcmp(mode, "deepbind") && argc > 2) {
        void *h = dlopen(argv[2], RTLD_NOW | RTLD_DEEPBIND);
        if (!h) {
            fprintf(stderr, "unseen_cancel deepbind: %s\n", dlerror());
            return 2;
        }
        void (*start)(pthread_t, int) = (void (*)(pthread_t, int))dlsym(h, "deepbind_start");
        if (!start)
            die("deepbind_start");
        start(main_thread, cli);
    } else {
        fprintf(stderr, "unseen_cancel: unknown mode %s\n", mode);
        return 2;
    }

    alarm(5);
    char c[2];
    ssize_t n;
    pthread_cleanup_push(cleanup, NULL);
    n = read(srv, c, 1);
    /* Said with the system call itself: stdio's write is a cancellation point of glibc's,
     * which would act on a cancel the read ignored and hide the failure. */
    say("read returned (not cancelled)", n);
    /* A cancel still pending is acted on here at the latest, by glibc's wrapper. */
    n = read(srv, c, 1);
    say("second read returned", n);
    pthread_cleanup_pop(0);
    return 1;
}
