/* Shared helpers for the stallguard C example servers.
 *
 * Only protocol parsing, option parsing and listener setup live here.  The
 * per-connection I/O (recv/send, read/write, sendfile, epoll ...) is written
 * out in each server on purpose: which libc functions a binary imports is
 * exactly what the LD_PRELOAD shim hooks, so it must stay visible per file.
 */
#ifndef STALLGUARD_EXAMPLES_COMMON_H
#define STALLGUARD_EXAMPLES_COMMON_H

#include <stddef.h>

#define HDR_MAX   (64 * 1024) /* header blocks larger than this close the connection */
#define BIG_CHUNK (64 * 1024) /* /big bodies are sent as repeats of this pattern chunk */

struct opts {
    int port;                /* argv[1]; 0 = ephemeral */
    int ipv6;                /* --ipv6: listen on ::1 instead of 127.0.0.1 */
    unsigned long long big;  /* --big BYTES (default 16 MiB) */
    int longpoll_ms;         /* --longpoll MS (default 3000) */
    int count;               /* --threads / --procs / --workers */
    const char *unix_path;   /* --unix PATH: listen on a Unix stream socket instead */
};

/* Parses "PORT [options]".  count_opt names the server's count option (e.g.
 * "--threads") or is NULL if it has none.  Exits with status 2 on bad usage. */
void parse_opts(int argc, char **argv, const char *count_opt, int count_default,
                struct opts *o);

/* socket + bind + listen on the loopback address, then prints "port=N" on
 * stdout (the only thing the servers ever print there).  Exits on failure. */
int listen_on(const struct opts *o);

enum resp_kind { RESP_SMALL, RESP_BIG, RESP_LONGPOLL };

struct req {
    size_t hdr_len;                /* bytes of request line + headers + CRLFCRLF */
    unsigned long long body_len;   /* Content-Length, 0 if absent */
    enum resp_kind kind;
    int is_post;
};

/* Looks for a complete header block at the start of buf.
 * Returns 1 and fills *r if found, 0 if more bytes are needed, -1 if the
 * connection should be closed: malformed Content-Length, or HDR_MAX bytes
 * without a header terminator.  (The size check lives here, out of the
 * servers' sight, so the compiler cannot prove pool_server's header recv()
 * in bounds and keeps it a fortified __recv_chk.) */
int http_parse(const char *buf, size_t len, struct req *r);

struct resp {
    enum resp_kind kind;
    char buf[128];                 /* status line + headers, then the small body */
    size_t head_len, body_len;     /* buf = head (head_len) + small body (body_len) */
    unsigned long long big_len;    /* /big: this many pattern bytes follow the head */
};

/* Builds the response for a fully received request.  For RESP_LONGPOLL the
 * server must wait o->longpoll_ms before sending it. */
void http_respond(const struct req *r, const struct opts *o, struct resp *out);

/* BIG_CHUNK bytes of the /big pattern.  The pattern's period divides
 * BIG_CHUNK, so sending the chunk back to back yields one seamless body. */
const char *pattern_chunk(void);

/* Drops up to n bytes from the front of buf (length *len); returns how many. */
size_t buf_drop(char *buf, size_t *len, unsigned long long n);

/* Sleeps without touching any fd (used for /longpoll in blocking servers). */
void sleep_ms(int ms);

/* write() until all n bytes are out (retrying EINTR); -1 on any other error. */
int write_all(int fd, const char *p, size_t n);

#endif
