/* pool_server: the classic victim of slow clients.
 *
 * A fixed pool of N threads all block in accept() on one listening socket and
 * serve each connection to completion with blocking recv()/send().  N clients
 * that connect and then stall (never send, or never read a /big response)
 * park every thread forever: there are no timeouts anywhere, on purpose.
 *
 * SIGPIPE keeps its default disposition and send() gets flags 0 (no
 * MSG_NOSIGNAL): writing to a connection that was shut down kills the whole
 * process, which is what the shim must avoid when it reaps a connection.
 *
 * SIGTERM and SIGINT end it through exit() (main returns), as many servers do: atexit
 * handlers run while the workers are still blocked in their calls.
 *
 * usage: pool_server PORT [--threads N] [--big BYTES] [--longpoll MS] [--ipv6]
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

static struct opts opt;
static int lfd;

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, 0);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_response(int fd, const struct resp *r)
{
    if (r->kind == RESP_LONGPOLL)
        sleep_ms(opt.longpoll_ms); /* holds the worker, socket untouched */
    if (send_all(fd, r->buf, r->head_len + r->body_len) < 0)
        return -1;
    for (unsigned long long left = r->big_len; left > 0;) {
        size_t n = left < BIG_CHUNK ? (size_t)left : BIG_CHUNK;
        if (send_all(fd, pattern_chunk(), n) < 0) /* blocks if the client doesn't read */
            return -1;
        left -= n;
    }
    return 0;
}

/* Serves keep-alive requests until the client closes or an error occurs. */
static void serve(int fd)
{
    /* A fixed-size array, so with _FORTIFY_SOURCE=3 (see c-examples.mk) the
     * header recv() below becomes __recv_chk: the compiler knows the object
     * size but cannot prove the length fits (the limit is checked inside
     * http_parse).  The body recv() is provably in bounds and stays plain
     * recv(): the shim must hook both. */
    char buf[HDR_MAX];
    size_t len = 0;

    for (;;) {
        struct req rq;
        int st;
        while ((st = http_parse(buf, len, &rq)) == 0) {
            ssize_t n = recv(fd, buf + len, sizeof(buf) - len, 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return; /* client closed (or error) */
            len += (size_t)n;
        }
        if (st < 0)
            return;

        /* Consume the header, then the body (part may already be buffered). */
        buf_drop(buf, &len, rq.hdr_len);
        unsigned long long left = rq.body_len;
        left -= buf_drop(buf, &len, left);
        while (left > 0) {
            ssize_t n = recv(fd, buf, left < sizeof(buf) ? (size_t)left : sizeof(buf), 0);
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
        /* Any bytes still in buf are the next pipelined request. */
    }
}

static void *worker(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("pool_server: accept");
            sleep_ms(100); /* e.g. EMFILE: don't spin */
            continue;
        }
        serve(fd);
        close(fd);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    parse_opts(argc, argv, "--threads", 4, &opt);
    lfd = listen_on(&opt);

    /* Blocked before the workers exist, so they inherit the mask: only main takes them. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    pthread_t tids[opt.count];
    for (int i = 0; i < opt.count; i++) {
        int e = pthread_create(&tids[i], NULL, worker, NULL);
        if (e) {
            fprintf(stderr, "pool_server: pthread_create failed (%d)\n", e);
            return 1;
        }
    }
    int sig = 0;
    while (sigwait(&stop, &sig) != 0)
        ;
    return 0; /* exit(): atexit handlers run, the workers end with the process */
}
