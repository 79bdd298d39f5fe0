/* A server whose exit handler still serves: registered at start (before it listens), it
 * reads the connection accepted last until the client sends something or the connection
 * ends (as a server draining its connections, or joining workers that do, at exit).
 * tests/start_stop.rs builds it at test time.
 *
 * Usage: exit_drain PORT. Listens on 127.0.0.1:PORT, prints "listening", accepts one
 * connection, then calls exit(0) with the connection still open. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int conn = -1;

static void drain(void) {
    char b[64];
    ssize_t n = read(conn, b, sizeof b);
    printf("drained=%zd\n", n);
    fflush(stdout);
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 64;
    atexit(drain);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(atoi(argv[1]));
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 8) != 0) {
        perror("listen");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);
    conn = accept(l, NULL, NULL);
    if (conn < 0) {
        perror("accept");
        return 2;
    }
    exit(0);
}
