/* Shared helpers for the example servers; see common.h. */
#define _GNU_SOURCE
#include "common.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static void usage(const char *prog, const char *count_opt)
{
    fprintf(stderr, "usage: %s PORT%s%s%s [--big BYTES] [--longpoll MS] [--ipv6] [--unix PATH]\n",
            prog, count_opt ? " [" : "", count_opt ? count_opt : "",
            count_opt ? " N]" : "");
    exit(2);
}

static unsigned long long num(const char *s, const char *prog, const char *count_opt)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s ? s : "", &end, 10);
    if (!s || !*s || *end || errno || *s == '-')
        usage(prog, count_opt);
    return v;
}

void parse_opts(int argc, char **argv, const char *count_opt, int count_default,
                struct opts *o)
{
    const char *prog = argv[0];
    if (argc < 2)
        usage(prog, count_opt);
    o->port = (int)num(argv[1], prog, count_opt);
    o->ipv6 = 0;
    o->big = 16ULL << 20;
    o->longpoll_ms = 3000;
    o->count = count_default;
    o->unix_path = NULL;
    if (o->port > 65535)
        usage(prog, count_opt);

    for (int i = 2; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--ipv6")) {
            o->ipv6 = 1;
            continue;
        }
        if (!strcmp(a, "--big"))
            o->big = num(v, prog, count_opt);
        else if (!strcmp(a, "--unix") && v)
            o->unix_path = v;
        else if (!strcmp(a, "--longpoll"))
            o->longpoll_ms = (int)num(v, prog, count_opt);
        else if (count_opt && !strcmp(a, count_opt))
            o->count = (int)num(v, prog, count_opt);
        else
            usage(prog, count_opt);
        i++; /* consumed the value */
    }
    if (o->count < 1 || o->longpoll_ms < 0)
        usage(prog, count_opt);
}

/* --unix PATH: a Unix stream listener (mod_cgid-style); prints "port=0" all the same. */
static int listen_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (fd < 0 || strlen(path) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "unix socket %s: unusable\n", path);
        exit(1);
    }
    strcpy(sun.sun_path, path);
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, SOMAXCONN) < 0) {
        perror("bind/listen unix");
        exit(1);
    }
    printf("port=0\n");
    fflush(stdout);
    return fd;
}

int listen_on(const struct opts *o)
{
    if (o->unix_path)
        return listen_unix(o->unix_path);
    int fam = o->ipv6 ? AF_INET6 : AF_INET;
    int fd = socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        perror("socket");
        exit(1);
    }
    /* Tests restart servers on fixed ports quickly; don't trip on TIME_WAIT. */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));

    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    if (o->ipv6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((unsigned short)o->port);
        s6->sin6_addr = in6addr_loopback;
        sl = sizeof(*s6);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((unsigned short)o->port);
        s4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sl = sizeof(*s4);
    }
    /* A large backlog: when every worker is parked, new clients queue here in
     * the kernel, which is the situation the shim is meant to relieve. */
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, SOMAXCONN) < 0) {
        perror("bind/listen");
        exit(1);
    }

    sl = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        perror("getsockname");
        exit(1);
    }
    unsigned short port = o->ipv6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                  : ((struct sockaddr_in *)&ss)->sin_port;
    /* The tests parse exactly this line; flush before anything can block. */
    printf("port=%u\n", ntohs(port));
    fflush(stdout);
    return fd;
}

/* Value of a header line "Name: value" if name matches (case-insensitive). */
static const char *header_value(const char *line, const char *end, const char *name)
{
    size_t n = strlen(name);
    if ((size_t)(end - line) <= n || strncasecmp(line, name, n) || line[n] != ':')
        return NULL;
    line += n + 1;
    while (line < end && (*line == ' ' || *line == '\t'))
        line++;
    return line;
}

int http_parse(const char *buf, size_t len, struct req *r)
{
    const char *term = memmem(buf, len, "\r\n\r\n", 4);
    if (!term)
        return len >= HDR_MAX ? -1 : 0; /* header block too large */
    const char *end = term + 2; /* keep the last header's CRLF in range */

    memset(r, 0, sizeof(*r));
    r->hdr_len = (size_t)(term + 4 - buf);

    /* Request line: METHOD SP PATH SP VERSION */
    const char *eol = memmem(buf, (size_t)(end - buf), "\r\n", 2);
    const char *sp = memchr(buf, ' ', (size_t)(eol - buf));
    r->is_post = sp && sp - buf == 4 && !memcmp(buf, "POST", 4);
    if (sp) {
        const char *path = sp + 1, *pe = path;
        while (pe < eol && *pe != ' ' && *pe != '?')
            pe++;
        size_t pl = (size_t)(pe - path);
        if (pl == 4 && !memcmp(path, "/big", 4))
            r->kind = RESP_BIG;
        else if (pl == 9 && !memcmp(path, "/longpoll", 9))
            r->kind = RESP_LONGPOLL;
    }

    /* Headers: only Content-Length matters to us. */
    for (const char *line = eol + 2; line < end;) {
        const char *le = memmem(line, (size_t)(end - line), "\r\n", 2);
        const char *v = header_value(line, le, "content-length");
        if (v) {
            unsigned long long n = 0;
            if (v == le || !isdigit((unsigned char)*v))
                return -1;
            for (; v < le && isdigit((unsigned char)*v); v++) {
                if (n > (~0ULL - 9) / 10)
                    return -1;
                n = n * 10 + (unsigned)(*v - '0');
            }
            while (v < le && (*v == ' ' || *v == '\t'))
                v++;
            if (v != le)
                return -1;
            r->body_len = n;
        }
        line = le + 2;
    }
    return 1;
}

void http_respond(const struct req *r, const struct opts *o, struct resp *out)
{
    char body[64];
    int bl = 0;

    out->kind = r->kind;
    out->big_len = 0;
    if (r->kind == RESP_BIG)
        out->big_len = o->big;
    else if (r->kind == RESP_LONGPOLL)
        bl = snprintf(body, sizeof(body), "longpoll done\n");
    else if (r->is_post && r->body_len > 0)
        bl = snprintf(body, sizeof(body), "ok %llu\n", r->body_len);
    else
        bl = snprintf(body, sizeof(body), "ok\n");

    int hl = snprintf(out->buf, sizeof(out->buf),
                      "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n",
                      r->kind == RESP_BIG ? out->big_len : (unsigned long long)bl);
    memcpy(out->buf + hl, body, (size_t)bl);
    out->head_len = (size_t)hl;
    out->body_len = (size_t)bl;
}

static char pattern[BIG_CHUNK];
static pthread_once_t pattern_once = PTHREAD_ONCE_INIT;

/* 64-byte lines "abc...xyzabc...\n": easy to eyeball, period divides BIG_CHUNK. */
static void pattern_init(void)
{
    for (size_t i = 0; i < sizeof(pattern); i++)
        pattern[i] = (i % 64 == 63) ? '\n' : (char)('a' + (i % 64) % 26);
}

const char *pattern_chunk(void)
{
    pthread_once(&pattern_once, pattern_init);
    return pattern;
}

size_t buf_drop(char *buf, size_t *len, unsigned long long n)
{
    size_t d = n < *len ? (size_t)n : *len;
    memmove(buf, buf + d, *len - d);
    *len -= d;
    return d;
}

void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
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
