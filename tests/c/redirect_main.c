/* redirect_main: run with redirect_plugin preloaded (after the shim, if any). Listens on a
 * loopback port, connects to 127.0.0.1:9 (the plugin sends it to the listener), accepts
 * (a tracked connection under the shim), and reads and writes over it and a pipe. Prints
 * whether the connect succeeded and how many read/write calls the plugin saw, which must be
 * the same with and without the shim, then lingers 0.3 s (the shim's start line). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include "harness.h"

int main(void)
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&a, &len) != 0)
        return perror("listener"), 2;
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(a.sin_port));
    setenv("REDIRECT_PORT", port, 1);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_port = htons(9);
    int r = connect(c, (struct sockaddr *)&a, sizeof a);
    printf("redirect: connect to :9 -> %s\n", r == 0 ? "connected" : strerror(errno));
    if (r != 0)
        return 1;
    int s = accept(l, NULL, NULL);
    int p[2];
    char buf[4];
    if (s < 0 || pipe(p) != 0)
        return perror("accept"), 2;
    int *fds = (int *)dlsym(RTLD_DEFAULT, "redirect_fds");
    if (!fds)
        return fprintf(stderr, "redirect: plugin not loaded\n"), 2;
    fds[0] = s, fds[1] = c, fds[2] = p[0], fds[3] = p[1];
    /* Two writes and two reads: a tracked socket and a pipe. */
    if (write_all(c, "ab", 2) != 0 || read_retry(s, buf, 2) != 2 || write_all(p[1], "x", 1) != 0 ||
        read_retry(p[0], buf, 1) != 1)
        return perror("io"), 2;
    int *seen_read = (int *)dlsym(RTLD_DEFAULT, "redirect_seen_read");
    int *seen_write = (int *)dlsym(RTLD_DEFAULT, "redirect_seen_write");
    if (!seen_read || !seen_write)
        return 2;
    printf("redirect: plugin saw read=%d write=%d\n", *seen_read, *seen_write);
    /* Time for the shim's watcher to write its start line, which the test reads. */
    usleep(300000);
    return 0;
}
