/* epoll_server: single-threaded event loop (nginx/redis style).
 *
 * Non-blocking listener and connections, level-triggered epoll.  A connection
 * is watched for EPOLLIN while idle, for EPOLLOUT only while output is
 * pending, and for nothing while a /longpoll timer runs (its timerfd is
 * watched instead; the loop never sleeps).  accept4(SOCK_NONBLOCK), read()
 * until EAGAIN, buffered write() driven by EPOLLOUT.
 *
 * A stalled client here costs only memory and an fd, never the loop; this
 * server is the control case for the shim.  Still no timeouts anywhere, and
 * SIGPIPE at its default: a write() to a shut-down socket kills the process.
 *
 * usage: epoll_server PORT [--big BYTES] [--longpoll MS] [--ipv6]
 */
#define _GNU_SOURCE
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

enum wkind { W_LISTEN, W_CONN, W_TIMER };

struct conn;
struct watch { /* what epoll_event.data.ptr points at */
    enum wkind kind;
    struct conn *c;
};

struct conn {
    int fd, tfd;                  /* socket; timerfd for /longpoll (-1 until needed) */
    struct watch io_w, tm_w;
    uint32_t events;              /* currently registered for fd */
    int dead;                     /* closed; freed after the current batch */
    struct conn *next_dead;

    char in[HDR_MAX];             /* unparsed input */
    size_t in_len;
    int have_req;                 /* header parsed, body still being skipped */
    struct req req;
    unsigned long long body_left;
    int eof;                      /* client closed its side */

    int longpoll;                 /* waiting for tfd before answering */
    int out_pending;
    struct resp out;
    size_t out_off;               /* bytes of out.buf already written */
    unsigned long long big_left;  /* /big pattern bytes still to write */
};

static struct opts opt;
static int ep, lfd, listen_paused;
static struct watch listen_w = {W_LISTEN, NULL};
static struct conn *dead_list;

static void ctl(int op, int fd, uint32_t events, struct watch *w)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    if (epoll_ctl(ep, op, fd, &ev) < 0) {
        perror("epoll_server: epoll_ctl");
        exit(1);
    }
}

static void conn_close(struct conn *c)
{
    close(c->fd); /* also removes it from the epoll set */
    if (c->tfd >= 0)
        close(c->tfd);
    c->dead = 1;
    c->next_dead = dead_list;
    dead_list = c;
    if (listen_paused) { /* an fd was freed: try accepting again */
        listen_paused = 0;
        ctl(EPOLL_CTL_MOD, lfd, EPOLLIN, &listen_w);
    }
}

/* Writes pending output until done or EAGAIN.  -1 on error. */
static int flush(struct conn *c)
{
    size_t small = c->out.head_len + c->out.body_len;
    while (c->out_pending) {
        const char *p;
        size_t n;
        if (c->out_off < small) {
            p = c->out.buf + c->out_off;
            n = small - c->out_off;
        } else if (c->big_left > 0) {
            size_t pos = (size_t)((c->out.big_len - c->big_left) % BIG_CHUNK);
            p = pattern_chunk() + pos;
            n = BIG_CHUNK - pos;
            if (n > c->big_left)
                n = (size_t)c->big_left;
        } else {
            c->out_pending = 0;
            break;
        }
        ssize_t w = write(c->fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        if (c->out_off < small)
            c->out_off += (size_t)w;
        else
            c->big_left -= (unsigned long long)w;
    }
    return 0;
}

static int start_output(struct conn *c)
{
    c->out_pending = 1;
    c->out_off = 0;
    c->big_left = c->out.big_len;
    return flush(c);
}

static int arm_longpoll(struct conn *c)
{
    if (c->tfd < 0) {
        c->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (c->tfd < 0)
            return -1;
        ctl(EPOLL_CTL_ADD, c->tfd, EPOLLIN, &c->tm_w);
    }
    /* it_value of zero would disarm the timer, so 0 ms becomes 1 ns. */
    struct itimerspec its = {.it_value = {opt.longpoll_ms / 1000,
                                          (long)(opt.longpoll_ms % 1000) * 1000000L}};
    if (opt.longpoll_ms == 0)
        its.it_value.tv_nsec = 1;
    c->longpoll = 1;
    return timerfd_settime(c->tfd, 0, &its, NULL);
}

/* Handles buffered requests one at a time, stopping while a response is
 * pending (keeps responses in order and input bounded).  -1: close. */
static int process(struct conn *c)
{
    while (!c->out_pending && !c->longpoll) {
        if (!c->have_req) {
            int st = http_parse(c->in, c->in_len, &c->req);
            if (st < 0)
                return -1;
            if (st == 0)
                return 0; /* need more header bytes */
            buf_drop(c->in, &c->in_len, c->req.hdr_len);
            c->have_req = 1;
            c->body_left = c->req.body_len;
        }
        c->body_left -= buf_drop(c->in, &c->in_len, c->body_left);
        if (c->body_left > 0)
            return 0; /* need more body bytes */
        c->have_req = 0;
        http_respond(&c->req, &opt, &c->out);
        if (c->out.kind == RESP_LONGPOLL)
            return arm_longpoll(c);
        if (start_output(c) < 0)
            return -1;
    }
    return 0;
}

static int on_readable(struct conn *c)
{
    for (;;) {
        if (c->in_len == sizeof(c->in)) {
            if (process(c) < 0)
                return -1;
            if (c->in_len == sizeof(c->in))
                break; /* busy answering; level-triggered epoll will call again */
        }
        ssize_t n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
        if (n > 0) {
            c->in_len += (size_t)n;
        } else if (n == 0) {
            c->eof = 1;
            break;
        } else if (errno == EAGAIN) {
            break;
        } else if (errno != EINTR) {
            return -1;
        }
    }
    return process(c);
}

/* After any event: close if finished, else watch what we now wait for. */
static void settle(struct conn *c, int rc)
{
    int idle = !c->out_pending && !c->longpoll;
    if (rc < 0 || (c->eof && idle)) {
        conn_close(c);
        return;
    }
    uint32_t want = c->out_pending ? EPOLLOUT : (c->longpoll || c->eof) ? 0 : EPOLLIN;
    if (want != c->events) {
        c->events = want;
        ctl(EPOLL_CTL_MOD, c->fd, want, &c->io_w);
    }
}

static void on_accept(void)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE) {
                /* Level-triggered: stop watching the listener until a
                 * connection closes, instead of spinning. */
                listen_paused = 1;
                ctl(EPOLL_CTL_MOD, lfd, 0, &listen_w);
            }
            return; /* EAGAIN (drained) or a transient error */
        }
        struct conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->tfd = -1;
        c->io_w = (struct watch){W_CONN, c};
        c->tm_w = (struct watch){W_TIMER, c};
        c->events = EPOLLIN;
        ctl(EPOLL_CTL_ADD, fd, EPOLLIN, &c->io_w);
    }
}

int main(int argc, char **argv)
{
    parse_opts(argc, argv, NULL, 1, &opt);
    lfd = listen_on(&opt);
    fcntl(lfd, F_SETFL, fcntl(lfd, F_GETFL) | O_NONBLOCK);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        perror("epoll_server: epoll_create1");
        return 1;
    }
    ctl(EPOLL_CTL_ADD, lfd, EPOLLIN, &listen_w);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1); /* no timeout: timers are fds */
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_server: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct watch *w = evs[i].data.ptr;
            uint32_t e = evs[i].events;
            struct conn *c = w->c;
            if (w->kind == W_LISTEN) {
                on_accept();
            } else if (c->dead) {
                continue; /* closed earlier in this batch */
            } else if (w->kind == W_TIMER) {
                uint64_t expirations;
                if (read(c->tfd, &expirations, sizeof(expirations)) < 0)
                    continue; /* spurious wakeup: EAGAIN */
                c->longpoll = 0;
                int rc = start_output(c);
                settle(c, rc < 0 ? rc : process(c));
            } else if (e & (EPOLLERR | EPOLLHUP)) {
                conn_close(c); /* reset by peer, or fully shut down */
            } else if (e & EPOLLOUT) {
                int rc = flush(c);
                settle(c, rc < 0 ? rc : process(c));
            } else if (e & EPOLLIN) {
                settle(c, on_readable(c));
            }
        }
        while (dead_list) {
            struct conn *c = dead_list;
            dead_list = c->next_dead;
            free(c);
        }
    }
}
