/* stdio_service: an inetd-style service in the manner of micro-httpd.
 *
 * It is started with the client connection already on fds 0, 1 and 2 (by inetd, or by a
 * test playing inetd) and does all its I/O through stdio: fgets() on stdin, fwrite() and
 * printf() on stdout. glibc performs those reads and writes internally, so no LD_PRELOAD hook
 * ever sees them: the shim must adopt the socket and judge it by the kernel's counters.
 * One request per process (HTTP/1.0), SIGPIPE at its default action.
 *
 * usage: stdio_service [--big BYTES (default 4 MiB)]
 *   GET /big → BYTES of pattern; anything else → "ok\n".
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    unsigned long long big = 4ULL << 20;
    if (argc == 3 && strcmp(argv[1], "--big") == 0)
        big = strtoull(argv[2], NULL, 10);

    char line[8192], path[1024] = "";
    if (!fgets(line, sizeof(line), stdin))
        return 0; /* the client went away (or was cut) before the request line */
    if (sscanf(line, "%*s %1023s", path) != 1)
        return 0;
    for (;;) { /* headers, up to the blank line */
        if (!fgets(line, sizeof(line), stdin))
            return 0;
        if (strcmp(line, "\r\n") == 0 || strcmp(line, "\n") == 0)
            break;
    }

    int is_big = strcmp(path, "/big") == 0;
    unsigned long long len = is_big ? big : 3;
    printf("HTTP/1.0 200 OK\r\nContent-Length: %llu\r\n\r\n", len);
    if (!is_big) {
        fputs("ok\n", stdout);
    } else {
        static char chunk[65536];
        for (size_t i = 0; i < sizeof(chunk); i++)
            chunk[i] = (i % 64 == 63) ? '\n' : (char)('a' + i % 26);
        for (unsigned long long left = len; left > 0;) {
            size_t n = left < sizeof(chunk) ? (size_t)left : sizeof(chunk);
            if (fwrite(chunk, 1, n, stdout) != n)
                return 1; /* the connection is gone */
            left -= n;
        }
    }
    return fflush(stdout) == 0 ? 0 : 1;
}
