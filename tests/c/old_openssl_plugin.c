/* A plugin built against OpenSSL 1.1 (its references are SSL_write@OPENSSL_1_1_0, ...) in a
 * program that uses OpenSSL 3 itself: the plugin's calls bind to the guard's unversioned
 * exports, and must reach the plugin's own OpenSSL 1.1, never the program's OpenSSL 3 (whose
 * SSL_write would read a 1.1 SSL* with 3's layout: a crash in the host).
 *
 * Built by tests/tls.rs in three parts, next to each other:
 * - libssl11fake.so: the stand-in for OpenSSL 1.1, tests/c/other_tls.c with a version script
 *   giving its SSL_new, SSL_set_fd, SSL_read, SSL_write the version OPENSSL_1_1_0 (its SSL*
 *   is a page that cannot be read at all: OpenSSL 3 reading it crashes at once);
 * - libold_openssl_plugin.so: this file, linked against libssl11fake.so (RUNPATH $ORIGIN);
 * - old_openssl_main: this file with -DMAIN, linked against the system's OpenSSL 3 (global
 *   scope), which dlopens the plugin RTLD_LOCAL and calls its `run`: "hello" written with
 *   SSL_write on one end of a socketpair and read back with SSL_read; prints "moved=N,N". */
#include <dlfcn.h>
#include <stdio.h>
#include <sys/socket.h>

#ifdef MAIN
#include <openssl/ssl.h>

int main(int argc, char **argv) {
    if (argc != 2)
        return 8;
    OPENSSL_init_ssl(0, NULL); /* the program itself uses OpenSSL 3 */
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 9;
    }
    int (*run)(void) = (int (*)(void))dlsym(h, "run");
    return run ? run() : 10;
}
#else
typedef struct old_ssl SSL;
SSL *SSL_new(void *ctx);
int SSL_set_fd(SSL *s, int fd);
int SSL_write(SSL *s, const void *buf, int n);
int SSL_read(SSL *s, void *buf, int n);

int run(void) {
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
