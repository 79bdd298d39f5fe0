/* eager_server: accept eagerly, queue in user space.
 *
 * One acceptor thread (main) accepts every connection at once and pushes the
 * fd onto an unbounded queue; N worker threads pop fds and serve them with
 * blocking read()/write().  This models civetweb / Python thread pools: the
 * kernel backlog stays empty, so once the workers are parked by stalled
 * clients, new connections sit accepted-but-unserved in the queue, invisible
 * to anything that only looks at the listen backlog.
 *
 * No timeouts and SIGPIPE at its default, as in the other servers.
 *
 * usage: eager_server PORT [--workers N] [--big BYTES] [--longpoll MS] [--ipv6]
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static struct opts opt;

/* Unbounded FIFO of accepted fds (a linked list under one mutex). */
struct node {
    struct node *next;
    int fd;
};
static struct node *q_head, *q_tail;
static pthread_mutex_t q_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cv = PTHREAD_COND_INITIALIZER;

static void q_push(int fd)
{
    struct node *n = malloc(sizeof(*n));
    if (!n) {
        close(fd); /* out of memory: drop the connection */
        return;
    }
    n->fd = fd;
    n->next = NULL;
    pthread_mutex_lock(&q_mu);
    if (q_tail)
        q_tail->next = n;
    else
        q_head = n;
    q_tail = n;
    pthread_cond_signal(&q_cv);
    pthread_mutex_unlock(&q_mu);
}

static int q_pop(void)
{
    pthread_mutex_lock(&q_mu);
    while (!q_head)
        pthread_cond_wait(&q_cv, &q_mu);
    struct node *n = q_head;
    q_head = n->next;
    if (!q_head)
        q_tail = NULL;
    pthread_mutex_unlock(&q_mu);
    int fd = n->fd;
    free(n);
    return fd;
}

static int send_response(int fd, const struct resp *r)
{
    if (r->kind == RESP_LONGPOLL)
        sleep_ms(opt.longpoll_ms);
    if (write_all(fd, r->buf, r->head_len + r->body_len) < 0)
        return -1;
    for (unsigned long long left = r->big_len; left > 0;) {
        size_t n = left < BIG_CHUNK ? (size_t)left : BIG_CHUNK;
        if (write_all(fd, pattern_chunk(), n) < 0)
            return -1;
        left -= n;
    }
    return 0;
}

/* buf is each worker's heap buffer of HDR_MAX bytes (civetweb style).  The
 * compiler cannot see its size, so these stay plain read() even under
 * _FORTIFY_SOURCE; pool_server covers the fortified __recv_chk. */
static void serve(int fd, char *buf)
{
    size_t len = 0;

    for (;;) {
        struct req rq;
        int st;
        while ((st = http_parse(buf, len, &rq)) == 0) {
            ssize_t n = read(fd, buf + len, HDR_MAX - len);
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
            ssize_t n = read(fd, buf, left < HDR_MAX ? (size_t)left : HDR_MAX);
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

static void *worker(void *arg)
{
    (void)arg;
    char *buf = malloc(HDR_MAX);
    if (!buf) {
        perror("eager_server: malloc");
        exit(1);
    }
    for (;;) {
        int fd = q_pop();
        serve(fd, buf);
        close(fd);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    parse_opts(argc, argv, "--workers", 1, &opt);
    int lfd = listen_on(&opt);

    for (int i = 0; i < opt.count; i++) {
        pthread_t t;
        int e = pthread_create(&t, NULL, worker, NULL);
        if (e) {
            fprintf(stderr, "eager_server: pthread_create failed (%d)\n", e);
            return 1;
        }
        pthread_detach(t);
    }

    /* The acceptor never waits for a free worker: that is the point. */
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("eager_server: accept");
            sleep_ms(100); /* e.g. EMFILE: don't spin */
            continue;
        }
        q_push(fd);
    }
}
