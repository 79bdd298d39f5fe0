/* Another TLS library with OpenSSL's function names (as GnuTLS's OpenSSL layer,
 * libgnutls-openssl, has): its own SSL_new, SSL_set_fd, SSL_write, SSL_read, and no
 * SSL_get_rbio. Its SSL* is not OpenSSL's: here it points to a page that cannot be read at
 * all (the library keeps its state elsewhere), so anyone reading it as OpenSSL's SSL* (the
 * guard calling OpenSSL's SSL_get_rbio on it) crashes at once, whatever OpenSSL's version.
 *
 * Built twice by tests/tls.rs: as libother_tls.so, and with -DCLIENT as the program linked
 * against it (so its SSL_* are in the global scope), which also maps OpenSSL's libssl
 * privately (dlopen RTLD_LOCAL, as a plugin or Python's _ssl module does), writes "hello"
 * through SSL_write on one end of a socketpair, reads it back with SSL_read on the other and
 * prints "moved=N,N". */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct other_ssl SSL;

#ifndef CLIENT
static int fds[16];
static char *page;

SSL *SSL_new(void *ctx) {
    (void)ctx;
    static int used;
    if (!page)
        page = mmap(NULL, 16 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED || used == 16)
        return NULL;
    return (SSL *)(page + 4096 * used++);
}

static int *fd_of(SSL *s) { return &fds[((char *)s - page) / 4096]; }

int SSL_set_fd(SSL *s, int fd) {
    *fd_of(s) = fd;
    return 1;
}

int SSL_write(SSL *s, const void *buf, int n) { return (int)write(*fd_of(s), buf, n); }

int SSL_read(SSL *s, void *buf, int n) { return (int)read(*fd_of(s), buf, n); }
#else
SSL *SSL_new(void *ctx);
int SSL_set_fd(SSL *s, int fd);
int SSL_write(SSL *s, const void *buf, int n);
int SSL_read(SSL *s, void *buf, int n);

int main(void) {
    if (!dlopen("libssl.so.3", RTLD_NOW | RTLD_LOCAL)) {
        fprintf(stderr, "dlopen libssl.so.3: %s\n", dlerror());
        return 9;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return 1;
    SSL *a = SSL_new(NULL), *b = SSL_new(NULL);
    if (!a || !b)
        return 2;
    SSL_set_fd(a, sv[0]);
    SSL_set_fd(b, sv[1]);
    char buf[16];
    int w = SSL_write(a, "hello", 5);
    int r = SSL_read(b, buf, sizeof buf);
    printf("moved=%d,%d\n", w, r);
    return 0;
}
#endif
