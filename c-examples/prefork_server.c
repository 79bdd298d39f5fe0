/* prefork_server: Apache-prefork style.
 *
 * The parent creates the listener and a temporary file holding the /big body,
 * prints "port=N", then forks N children.  Each child loops on accept4() and
 * serves one connection at a time with read() and writev()/write(); /big is
 * sent with sendfile() from the shared temporary file.  Built with
 * -D_FILE_OFFSET_BITS=64, so the import is sendfile64.
 *
 * No timeouts, SIGPIPE at its default: a stalled client parks a child, and a
 * write to a shut-down connection kills that child.  Dead children are NOT
 * respawned (the parent reports them on stderr), so a reap that killed a child
 * stays visible to tests.  SIGTERM/SIGINT to the parent stops everything.
 *
 * usage: prefork_server PORT [--procs N] [--big BYTES] [--longpoll MS] [--ipv6]
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static struct opts opt;
static int lfd, bigfd;

/* The /big body lives in an unlinked temp file shared by all children; each
 * sendfile() call passes its own offset, so the shared file position is unused. */
static int make_big_file(unsigned long long size)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/prefork_big.XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0) {
        perror("prefork_server: mkstemp");
        exit(1);
    }
    unlink(path);
    for (unsigned long long left = size; left > 0;) {
        size_t n = left < BIG_CHUNK ? (size_t)left : BIG_CHUNK;
        if (write_all(fd, pattern_chunk(), n) < 0) {
            perror("prefork_server: write big file");
            exit(1);
        }
        left -= n;
    }
    return fd;
}

static int send_response(int fd, const struct resp *r)
{
    if (r->kind == RESP_LONGPOLL)
        sleep_ms(opt.longpoll_ms);

    if (r->kind != RESP_BIG) {
        /* Header and small body in one writev(). */
        struct iovec iov[2] = {
            {(void *)r->buf, r->head_len},
            {(void *)(r->buf + r->head_len), r->body_len},
        };
        size_t total = r->head_len + r->body_len;
        ssize_t w;
        while ((w = writev(fd, iov, 2)) < 0 && errno == EINTR)
            ;
        if (w < 0)
            return -1;
        /* Short writev (unlikely for ~60 bytes): finish with plain write(). */
        return (size_t)w == total ? 0 : write_all(fd, r->buf + w, total - (size_t)w);
    }

    if (write_all(fd, r->buf, r->head_len) < 0)
        return -1;
    off_t off = 0;
    while ((unsigned long long)off < r->big_len) {
        unsigned long long left = r->big_len - (unsigned long long)off;
        size_t n = left > (1u << 30) ? (1u << 30) : (size_t)left;
        ssize_t s = sendfile(fd, bigfd, &off, n); /* advances off */
        if (s < 0 && errno == EINTR)
            continue;
        if (s <= 0)
            return -1; /* error (or file shrank): give up on this connection */
    }
    return 0;
}

static void serve(int fd)
{
    char buf[HDR_MAX];
    size_t len = 0;

    for (;;) {
        struct req rq;
        int st;
        while ((st = http_parse(buf, len, &rq)) == 0) {
            ssize_t n = read(fd, buf + len, sizeof(buf) - len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return;
            len += (size_t)n;
        }
        if (st < 0)
            return;

        buf_drop(buf, &len, rq.hdr_len);
        unsigned long long left = rq.body_len;
        left -= buf_drop(buf, &len, left);
        while (left > 0) {
            ssize_t n = read(fd, buf, left < sizeof(buf) ? (size_t)left : sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return;
            left -= (unsigned long long)n;
        }

        struct resp rs;
        http_respond(&rq, &opt, &rs);
        if (send_response(fd, &rs) < 0)
            return;
    }
}

static void child_loop(void)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("prefork_server: accept4");
            sleep_ms(100); /* e.g. EMFILE: don't spin */
            continue;
        }
        serve(fd);
        close(fd);
    }
}

int main(int argc, char **argv)
{
    parse_opts(argc, argv, "--procs", 4, &opt);
    bigfd = make_big_file(opt.big);
    lfd = listen_on(&opt); /* prints port= before any fork */

    /* The parent handles signals synchronously with sigwaitinfo(); block them
     * before forking so none is lost, and unblock them in each child. */
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGCHLD);
    sigprocmask(SIG_BLOCK, &set, &old);

    pid_t parent = getpid();
    pid_t *kids = calloc((size_t)opt.count, sizeof(*kids));
    if (!kids)
        return 1;
    for (int i = 0; i < opt.count; i++) {
        pid_t p = fork();
        if (p < 0) {
            perror("prefork_server: fork");
            break;
        }
        if (p == 0) {
            sigprocmask(SIG_SETMASK, &old, NULL);
            /* Don't outlive a parent killed with SIGKILL (tests, crashes). */
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent)
                _exit(0);
            child_loop();
            _exit(0);
        }
        kids[i] = p;
    }

    int alive = 0;
    for (int i = 0; i < opt.count; i++)
        alive += kids[i] > 0;
    while (alive > 0) {
        siginfo_t si;
        if (sigwaitinfo(&set, &si) < 0)
            continue;
        if (si.si_signo == SIGCHLD) {
            int status;
            pid_t p;
            while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
                for (int i = 0; i < opt.count; i++) {
                    if (kids[i] == p) {
                        kids[i] = 0;
                        alive--;
                    }
                }
                if (WIFSIGNALED(status))
                    fprintf(stderr, "prefork_server: child %d killed by signal %d\n",
                            (int)p, WTERMSIG(status));
                else
                    fprintf(stderr, "prefork_server: child %d exited with status %d\n",
                            (int)p, WEXITSTATUS(status));
            }
            continue;
        }
        /* SIGTERM / SIGINT: stop the children, reap them, exit. */
        for (int i = 0; i < opt.count; i++)
            if (kids[i] > 0)
                kill(kids[i], SIGTERM);
        for (int i = 0; i < opt.count; i++)
            if (kids[i] > 0)
                waitpid(kids[i], NULL, 0);
        free(kids);
        return 0;
    }
    fprintf(stderr, "prefork_server: no children left\n");
    free(kids);
    return 1;
}
