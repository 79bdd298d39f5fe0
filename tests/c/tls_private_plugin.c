/* A plugin with OpenSSL built in (static libssl.a and libcrypto.a), as a program loads it with
 * RTLD_LOCAL: no file called libssl.so* is loaded, yet the plugin's calls to SSL_read and
 * SSL_write bind to the guard's exports (the global scope comes first). tests/tls.rs builds
 * it at test time and calls `roundtrip` through Python's ctypes (RTLD_LOCAL).
 *
 * roundtrip(cert, key): a TLS server thread and a client over a socketpair; the client
 * writes "ping", the server echoes it back through SSL_read/SSL_write, and the client reads
 * it with SSL_read_ex. Returns 0 when every call moved the bytes, else the failing step. */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct server {
    const char *cert, *key;
    int fd, rc;
};

static void *serve(void *p) {
    struct server *s = p;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || SSL_CTX_use_certificate_file(ctx, s->cert, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, s->key, SSL_FILETYPE_PEM) != 1) {
        s->rc = 10;
        return NULL;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, s->fd);
    char buf[16];
    int n;
    if (SSL_accept(ssl) != 1)
        s->rc = 11;
    else if ((n = SSL_read(ssl, buf, sizeof buf)) != 4)
        s->rc = 12;
    else if (SSL_write(ssl, buf, n) != 4)
        s->rc = 13;
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return NULL;
}

int roundtrip(const char *cert, const char *key) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return 1;
    struct server s = {cert, key, sv[1], 0};
    pthread_t t;
    if (pthread_create(&t, NULL, serve, &s) != 0)
        return 2;
    int rc = 0;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, sv[0]);
    char buf[16] = {0};
    size_t got = 0, put = 0;
    if (SSL_connect(ssl) != 1)
        rc = 3;
    else if (SSL_write_ex(ssl, "ping", 4, &put) != 1 || put != 4)
        rc = 4;
    else if (SSL_read_ex(ssl, buf, sizeof buf, &got) != 1 || got != 4 || memcmp(buf, "ping", 4))
        rc = 5;
    pthread_join(t, NULL);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(sv[0]);
    close(sv[1]);
    return rc ? rc : s.rc;
}
