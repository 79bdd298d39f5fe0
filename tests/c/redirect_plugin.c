/* redirect_plugin: a second interposer preloaded after the shim (as proxychains, torsocks,
 * socket_wrapper do): connect() to port 9 goes to the port in REDIRECT_PORT instead, and the
 * read and write calls it sees on the fds the program lists in redirect_fds are counted. The
 * shim's real functions are this library's; a direct system call would skip it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int redirect_seen_read, redirect_seen_write;
int redirect_fds[4] = {-1, -1, -1, -1};

static int watched(int fd)
{
    for (int i = 0; i < 4; i++)
        if (fd >= 0 && redirect_fds[i] == fd)
            return 1;
    return 0;
}

int connect(int fd, const struct sockaddr *a, socklen_t l)
{
    static int (*next)(int, const struct sockaddr *, socklen_t);
    if (!next)
        next = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "connect");
    struct sockaddr_in s;
    if (a && a->sa_family == AF_INET && l >= sizeof s && getenv("REDIRECT_PORT")) {
        memcpy(&s, a, sizeof s);
        if (ntohs(s.sin_port) == 9) {
            s.sin_port = htons((unsigned short)atoi(getenv("REDIRECT_PORT")));
            return next(fd, (struct sockaddr *)&s, sizeof s);
        }
    }
    return next(fd, a, l);
}

ssize_t read(int fd, void *b, size_t n)
{
    static ssize_t (*next)(int, void *, size_t);
    if (!next)
        next = (ssize_t (*)(int, void *, size_t))dlsym(RTLD_NEXT, "read");
    redirect_seen_read += watched(fd);
    return next(fd, b, n);
}

ssize_t write(int fd, const void *b, size_t n)
{
    static ssize_t (*next)(int, const void *, size_t);
    if (!next)
        next = (ssize_t (*)(int, const void *, size_t))dlsym(RTLD_NEXT, "write");
    redirect_seen_write += watched(fd);
    return next(fd, b, n);
}
