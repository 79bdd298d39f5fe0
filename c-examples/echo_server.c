/* echo_server: a thread-pool server for checksummed churn.
 *
 * N threads block in accept() on one listener and serve each connection to
 * completion with blocking read()/write()/writev() (keep-alive, pipelining).
 * `POST /echo` answers with the request body byte for byte, so a client that
 * sends random bytes detects any lost, duplicated or corrupted byte and any
 * connection cut in the middle of an exchange.  `GET /big` sends --big bytes
 * of the common pattern (a client that never reads stalls the write).
 * Anything else answers `ok\n`.
 *
 * Every connection is ended through one of the close paths the shim hooks,
 * in rotation, so fd numbers are released every way a program can release
 * them while new connections (and, every --pipe-every connections, a pipe
 * carrying a checksummed message) take the numbers over:
 *   0 close   1 close_range(fd, fd, 0)   2 fclose(fdopen(fd))
 *   3 dup2(/dev/null, fd) + close        4 dup3(/dev/null, fd, O_CLOEXEC) + close
 *   5 dup(fd), close(fd), close(copy)    6 fcntl(F_DUPFD_CLOEXEC), close both
 *   7 shutdown(SHUT_WR) + close
 *
 * SIGPIPE keeps its default action and writes pass no MSG_NOSIGNAL: a write
 * to a connection the shim shut down kills the process unless the shim keeps
 * its promise.  A pipe message that comes back wrong is reported on stderr and
 * the process exits 4.
 *
 * usage: echo_server PORT [--threads N=8] [--big BYTES] [--ipv6]
 *        (env ECHO_PIPE_EVERY=K: a pipe round trip after every K-th close; 0 = never; default 4)
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_BODY (4u << 20)

static struct opts opt;
static int lfd;
static int nullfd;
static unsigned pipe_every = 4;
static unsigned long close_counter;

/* Header and body in one writev (the shim turns it into sendmsg), the rest with write. */
static int respond(int fd, const char *body, size_t len)
{
    char head[96];
    int hl = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", len);
    struct iovec iov[2] = {{head, (size_t)hl}, {(void *)body, len}};
    ssize_t w;
    do
        w = writev(fd, iov, 2);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return -1;
    size_t done = (size_t)w;
    if (done < (size_t)hl)
        return write_all(fd, head + done, (size_t)hl - done) < 0 ? -1 : write_all(fd, body, len);
    done -= (size_t)hl;
    return write_all(fd, body + done, len - done);
}

static int send_big(int fd)
{
    char head[96];
    int hl = snprintf(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n",
                      opt.big);
    if (write_all(fd, head, (size_t)hl) < 0)
        return -1;
    for (unsigned long long left = opt.big; left > 0;) {
        size_t n = left < BIG_CHUNK ? (size_t)left : BIG_CHUNK;
        if (write_all(fd, pattern_chunk(), n) < 0)
            return -1;
        left -= n;
    }
    return 0;
}

/* Serves keep-alive requests until the client closes, misbehaves, or is cut. */
static void serve(int fd, char *buf, char **body, size_t *cap)
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
        if (st < 0 || rq.body_len > MAX_BODY)
            return;
        int is_echo = rq.is_post && rq.hdr_len > 11 && !memcmp(buf + 5, "/echo", 5);
        int is_big = rq.kind == RESP_BIG;
        buf_drop(buf, &len, rq.hdr_len);
        size_t blen = (size_t)rq.body_len;
        if (blen > *cap) {
            char *nb = realloc(*body, blen);
            if (!nb)
                return;
            *body = nb;
            *cap = blen;
        }
        size_t have = blen < len ? blen : len;
        if (have)
            memcpy(*body, buf, have);
        buf_drop(buf, &len, have);
        while (have < blen) {
            ssize_t n = read(fd, *body + have, blen - have);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return;
            have += (size_t)n;
        }
        int rc;
        if (is_big)
            rc = send_big(fd);
        else if (is_echo)
            rc = respond(fd, *body, blen);
        else
            rc = respond(fd, "ok\n", 3);
        if (rc < 0)
            return;
    }
}

/* A pipe that probably takes the number just released: a message through it must come back
 * intact (nothing may shut down or redirect an fd that now names a pipe). */
static void pipe_round_trip(unsigned long n)
{
    int p[2];
    if (pipe(p) < 0)
        return;
    char msg[64], back[64];
    int ml = snprintf(msg, sizeof(msg), "pipe message %lu fd %d/%d", n, p[0], p[1]);
    ssize_t w = write(p[1], msg, (size_t)ml);
    ssize_t r = read(p[0], back, sizeof(back));
    if (w != ml || r != ml || memcmp(msg, back, (size_t)ml)) {
        fprintf(stderr, "echo_server: pipe message %lu came back wrong (w=%zd r=%zd)\n", n, w, r);
        _exit(4);
    }
    close(p[0]);
    close(p[1]);
}

static void end_connection(int fd)
{
    unsigned long n = __atomic_fetch_add(&close_counter, 1, __ATOMIC_RELAXED);
    int copy;
    FILE *f;
    switch (n % 8) {
    case 0:
        close(fd);
        break;
    case 1:
        close_range((unsigned)fd, (unsigned)fd, 0);
        break;
    case 2:
        f = fdopen(fd, "r+");
        if (f)
            fclose(f);
        else
            close(fd);
        break;
    case 3:
        dup2(nullfd, fd);
        close(fd);
        break;
    case 4:
        dup3(nullfd, fd, O_CLOEXEC);
        close(fd);
        break;
    case 5:
        copy = dup(fd);
        close(fd);
        if (copy >= 0)
            close(copy);
        break;
    case 6:
        copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        close(fd);
        if (copy >= 0)
            close(copy);
        break;
    default:
        shutdown(fd, SHUT_WR);
        close(fd);
        break;
    }
    if (pipe_every && n % pipe_every == 0)
        pipe_round_trip(n);
}

static void *worker(void *arg)
{
    (void)arg;
    char *buf = malloc(HDR_MAX);
    char *body = NULL;
    size_t cap = 0;
    if (!buf) {
        fprintf(stderr, "echo_server: out of memory\n");
        exit(1);
    }
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            perror("echo_server: accept");
            sleep_ms(50); /* e.g. EMFILE: don't spin */
            continue;
        }
        serve(fd, buf, &body, &cap);
        end_connection(fd);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    parse_opts(argc, argv, "--threads", 8, &opt);
    const char *pe = getenv("ECHO_PIPE_EVERY");
    if (pe)
        pipe_every = (unsigned)strtoul(pe, NULL, 10);
    nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (nullfd < 0) {
        perror("echo_server: /dev/null");
        return 1;
    }
    lfd = listen_on(&opt);
    pthread_t tids[opt.count];
    for (int i = 0; i < opt.count; i++) {
        int e = pthread_create(&tids[i], NULL, worker, NULL);
        if (e) {
            fprintf(stderr, "echo_server: pthread_create failed (%d)\n", e);
            return 1;
        }
    }
    for (int i = 0; i < opt.count; i++)
        pthread_join(tids[i], NULL);
    return 0;
}
