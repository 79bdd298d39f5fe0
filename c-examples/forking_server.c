/* forking_server: fork per connection, inetd style, with a cap on live children.
 *
 * The parent accepts, forks, and closes its copy; the child moves the socket onto fds 0
 * and 1 with dup2() (as inetd does before exec'ing a service) and serves the connection
 * with blocking read(0)/write(1).  At most --max children run at once (like MaxClients):
 * the parent stops accepting while the cap is reached, so stalled clients drain it.
 *
 * What it proves for the shim: a connection accepted in one process and served in a forked
 * child (inherited tracking, a watcher started in the child) and through dup2 aliases.
 *
 * usage: forking_server PORT [--max N (default 4)] [--big BYTES] [--longpoll MS] [--ipv6]
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static struct opts opt;

static int send_response(const struct resp *r)
{
    if (r->kind == RESP_LONGPOLL)
        sleep_ms(opt.longpoll_ms);
    if (write_all(1, r->buf, r->head_len + r->body_len) < 0)
        return -1;
    for (unsigned long long left = r->big_len; left > 0;) {
        size_t n = left < BIG_CHUNK ? (size_t)left : BIG_CHUNK;
        if (write_all(1, pattern_chunk(), n) < 0)
            return -1;
        left -= n;
    }
    return 0;
}

/* The child: the connection is fds 0 and 1 only. */
static void serve_stdio(void)
{
    static char buf[HDR_MAX];
    size_t len = 0;

    for (;;) {
        struct req rq;
        int st;
        while ((st = http_parse(buf, len, &rq)) == 0) {
            ssize_t n = read(0, buf + len, sizeof(buf) - len);
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
            ssize_t n = read(0, buf, left < sizeof(buf) ? (size_t)left : sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return;
            left -= (unsigned long long)n;
        }
        struct resp rs;
        http_respond(&rq, &opt, &rs);
        if (send_response(&rs) < 0)
            return;
    }
}

static volatile sig_atomic_t stop;
static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

int main(int argc, char **argv)
{
    parse_opts(argc, argv, "--max", 4, &opt);
    int lfd = listen_on(&opt);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int live = 0;
    while (!stop) {
        /* Reap finished children; block for one while the cap is reached. */
        for (;;) {
            int flags = live >= opt.count ? 0 : WNOHANG;
            int status;
            pid_t p = waitpid(-1, &status, flags);
            if (p > 0) {
                live--;
                if (WIFSIGNALED(status)) /* e.g. SIGPIPE: make it visible to tests */
                    fprintf(stderr, "forking_server: child %d killed by signal %d\n", (int)p,
                            WTERMSIG(status));
                continue;
            }
            if (p < 0 && errno == EINTR && !stop)
                continue;
            break;
        }
        if (stop)
            break;
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno != EINTR && errno != ECONNABORTED) {
                perror("forking_server: accept");
                sleep_ms(100);
            }
            continue;
        }
        pid_t pid = fork();
        if (pid == 0) {
            close(lfd);
            signal(SIGTERM, SIG_DFL);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() == 1)
                _exit(0); /* the parent is already gone */
            if (dup2(fd, 0) < 0 || dup2(fd, 1) < 0)
                _exit(1);
            close(fd);
            serve_stdio();
            _exit(0);
        }
        if (pid > 0)
            live++;
        else
            perror("forking_server: fork");
        close(fd); /* the child owns the connection now */
    }
    /* Children die with us (PR_SET_PDEATHSIG): never signal the whole process group, which
     * may hold whoever started us. */
    return 0;
}
