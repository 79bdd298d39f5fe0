/* fileio_check: not a server.  Pushes known data through the file, pipe and
 * socket functions the shim hooks, and prints one deterministic line per step
 * (byte counts + FNV-1a checksums).  A test runs it with and without
 * LD_PRELOAD and compares the output: the shim must be invisible to ordinary
 * I/O.  Exit 0 on success, 1 on the first mismatch (reason on stderr).
 * Nothing run-dependent (fd numbers, pids, paths) is ever printed.
 *
 * usage: fileio_check
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define FILE_SIZE 300007u   /* odd sizes catch off-by-one chunking bugs */
#define PIPE_SIZE 1048579u  /* > pipe capacity: the writer must block */
#define FORK_SIZE 200003u

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "fileio_check: line %d: ", __LINE__);             \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, " (errno: %s)\n", strerror(errno));               \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

static uint64_t fnv1a(const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t h = 0xcbf29ce484222325ULL;
    while (n--)
        h = (h ^ *b++) * 0x100000001b3ULL;
    return h;
}

/* Deterministic pseudo-random bytes (xorshift64, fixed seed per use). */
static unsigned char *make_data(size_t n, uint64_t seed)
{
    unsigned char *d = malloc(n);
    CHECK(d, "malloc");
    for (size_t i = 0; i < n; i++) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        d[i] = (unsigned char)(seed >> 24);
    }
    return d;
}

static void write_fully(int fd, const void *p, size_t n)
{
    CHECK(write_all(fd, p, n) == 0, "write");
}

/* read() until n bytes or EOF; returns the byte count. */
static size_t read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read_retry(fd, (char *)p + got, n - got);
        CHECK(r >= 0, "read");
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return got;
}

static int cloexec(int fd)
{
    int f = fcntl(fd, F_GETFD);
    CHECK(f >= 0, "F_GETFD");
    return (f & FD_CLOEXEC) != 0;
}

static int is_open(int fd)
{
    return fcntl(fd, F_GETFD) >= 0;
}

static unsigned char *file_data;

/* 1. write / writev / pwrite into a temp file. */
static int step_file_write(void)
{
    const char *dir = getenv("TMPDIR");
    char path[4096];
    snprintf(path, sizeof(path), "%s/fileio_check.XXXXXX", dir && *dir ? dir : "/tmp");
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    unlink(path);

    file_data = make_data(FILE_SIZE, 0x5eed0001);
    write_fully(fd, file_data, 100000);
    struct iovec iov[3] = {
        {file_data + 100000, 1},
        {file_data + 100001, 49999},
        {file_data + 150000, 50000},
    };
    CHECK(writev(fd, iov, 3) == 100000, "writev");
    /* pwrite past the current offset and leave the offset alone. */
    CHECK(pwrite(fd, file_data + 200000, FILE_SIZE - 200000, 200000) ==
              (ssize_t)(FILE_SIZE - 200000), "pwrite");
    CHECK(lseek(fd, 0, SEEK_CUR) == 200000, "pwrite moved the offset");

    struct stat st;
    CHECK(fstat(fd, &st) == 0 && st.st_size == FILE_SIZE, "file size");
    printf("file_write: write=100000 writev=100000 pwrite=%u size=%lld fnv1a=%016llx\n",
           FILE_SIZE - 200000, (long long)st.st_size,
           (unsigned long long)fnv1a(file_data, FILE_SIZE));
    return fd;
}

/* 2. read (into a stack array: fortified __read_chk) / readv / pread back. */
static void step_file_read(int fd)
{
    unsigned char *back = malloc(FILE_SIZE);
    CHECK(back, "malloc");
    CHECK(lseek(fd, 0, SEEK_SET) == 0, "lseek");

    char chunk[4096];
    size_t got = 0;
    while (got < 100000) {
        size_t want = 100000 - got < sizeof(chunk) ? 100000 - got : sizeof(chunk);
        ssize_t r = read(fd, chunk, want);
        CHECK(r > 0, "read");
        memcpy(back + got, chunk, (size_t)r);
        got += (size_t)r;
    }
    struct iovec iov[2] = {{back + 100000, 33333}, {back + 133333, 66667}};
    CHECK(readv(fd, iov, 2) == 100000, "readv");
    CHECK(pread(fd, back + 200000, FILE_SIZE - 200000, 200000) ==
              (ssize_t)(FILE_SIZE - 200000), "pread");
    CHECK(lseek(fd, 0, SEEK_END) == FILE_SIZE && read(fd, chunk, 1) == 0, "EOF");
    CHECK(memcmp(back, file_data, FILE_SIZE) == 0, "read-back differs");
    printf("file_read: read=100000 readv=100000 pread=%u eof=1 fnv1a=%016llx\n",
           FILE_SIZE - 200000, (unsigned long long)fnv1a(back, FILE_SIZE));
    free(back);
}

/* 3. duplicates share the file offset: read the file round-robin through all. */
static void step_dup(int fd)
{
    int fds[6];
    fds[0] = fd;
    fds[1] = dup(fd);
    int t = open("/dev/null", O_RDONLY); /* dup2/dup3 must replace an open fd */
    fds[2] = dup2(fd, t);
    int t3 = open("/dev/null", O_RDONLY);
    fds[3] = dup3(fd, t3, O_CLOEXEC);
    fds[4] = fcntl(fd, F_DUPFD, 64);
    fds[5] = fcntl(fd, F_DUPFD_CLOEXEC, 64);
    CHECK(t >= 0 && t3 >= 0 && fds[2] == t && fds[3] == t3, "dup2/dup3");
    for (int i = 1; i < 6; i++)
        CHECK(fds[i] >= 0 && fds[i] != fd, "dup #%d", i);
    CHECK(fds[4] >= 64 && fds[5] >= 64 && fds[4] != fds[5], "F_DUPFD minimum");

    unsigned char *back = malloc(FILE_SIZE);
    CHECK(back, "malloc");
    CHECK(lseek(fds[3], 0, SEEK_SET) == 0, "lseek through dup3");
    size_t got = 0;
    for (int i = 0; got < FILE_SIZE; i = (i + 1) % 6) {
        size_t want = FILE_SIZE - got < 7001 ? FILE_SIZE - got : 7001;
        CHECK(read_full(fds[i], back + got, want) == want, "short read through dup");
        got += want;
    }
    CHECK(memcmp(back, file_data, FILE_SIZE) == 0, "read through dups differs");

    printf("dup: fds=6 bytes=%zu cloexec=%d%d%d%d%d%d fnv1a=%016llx\n", got,
           cloexec(fds[0]), cloexec(fds[1]), cloexec(fds[2]), cloexec(fds[3]),
           cloexec(fds[4]), cloexec(fds[5]), (unsigned long long)fnv1a(back, got));

    for (int i = 1; i < 6; i++)
        CHECK(close(fds[i]) == 0, "close dup");
    CHECK(read(fds[1], back, 1) < 0 && errno == EBADF, "closed dup still readable");
    CHECK(pread(fd, back, 64, 0) == 64 && !memcmp(back, file_data, 64),
          "original fd broken by closing its dups");
    free(back);
}

/* 4. a writer thread pushes more than a pipe's capacity through write(). */
static unsigned char *pipe_data;

static void *pipe_writer(void *arg)
{
    int wfd = *(int *)arg;
    uint64_t s = 12345;
    for (size_t off = 0; off < PIPE_SIZE;) {
        s = s * 6364136223846793005ULL + 1;
        size_t n = 1 + (size_t)(s >> 33) % 65537; /* varied chunk sizes */
        if (n > PIPE_SIZE - off)
            n = PIPE_SIZE - off;
        write_fully(wfd, pipe_data + off, n);
        off += n;
    }
    close(wfd);
    return NULL;
}

static void step_pipe_thread(void)
{
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    pipe_data = make_data(PIPE_SIZE, 0x5eed0002);
    unsigned char *back = malloc(PIPE_SIZE + 1);
    CHECK(back, "malloc");

    pthread_t t;
    CHECK(pthread_create(&t, NULL, pipe_writer, &p[1]) == 0, "pthread_create");
    size_t got = 0;
    for (;;) {
        size_t want = PIPE_SIZE + 1 - got; /* ask for one more: must see EOF */
        if (want > 3001)
            want = 3001;
        size_t r = read_full(p[0], back + got, want);
        got += r;
        CHECK(got <= PIPE_SIZE, "too much data from pipe");
        if (r < want) /* EOF */
            break;
    }
    pthread_join(t, NULL);
    close(p[0]);
    CHECK(got == PIPE_SIZE && !memcmp(back, pipe_data, PIPE_SIZE), "pipe data differs");
    printf("pipe_thread: bytes=%zu fnv1a=%016llx\n", got,
           (unsigned long long)fnv1a(back, got));
    free(back);
}

/* 5. poll/select readiness on a pipe: empty, readable, hung up. */
static void step_poll_select(void)
{
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    struct pollfd pfd = {.fd = p[0], .events = POLLIN};
    int before = poll(&pfd, 1, 0);
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(p[0], &rs);
    struct timeval tv = {0, 0};
    int sel_before = select(p[0] + 1, &rs, NULL, NULL, &tv);
    CHECK(before == 0 && sel_before == 0, "empty pipe reported readable");

    write_fully(p[1], "hello", 5);
    int after = poll(&pfd, 1, -1); /* data is there: returns at once */
    CHECK(after == 1 && (pfd.revents & POLLIN), "poll after write");
    fd_set ws;
    FD_ZERO(&rs);
    FD_SET(p[0], &rs);
    FD_ZERO(&ws);
    FD_SET(p[1], &ws);
    int hi = p[0] > p[1] ? p[0] : p[1];
    int sel_after = select(hi + 1, &rs, &ws, NULL, NULL);
    CHECK(sel_after == 2 && FD_ISSET(p[0], &rs) && FD_ISSET(p[1], &ws), "select after write");

    char buf[16];
    CHECK(read(p[0], buf, sizeof(buf)) == 5 && !memcmp(buf, "hello", 5), "read hello");
    close(p[1]);
    CHECK(poll(&pfd, 1, -1) == 1 && (pfd.revents & POLLHUP), "POLLHUP");
    CHECK(read(p[0], buf, sizeof(buf)) == 0, "EOF after hangup");
    close(p[0]);
    printf("poll_select: poll_empty=%d select_empty=%d poll_data=%d select_data=%d hup=1 "
           "bytes=5 fnv1a=%016llx\n",
           before, sel_before, after, sel_after, (unsigned long long)fnv1a("hello", 5));
}

/* 6. AF_UNIX socketpair: send/recv, then sendmsg/recvmsg with an fd attached. */
static void step_socketpair(int file_fd)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    unsigned char *d = make_data(52768, 0x5eed0003);
    unsigned char *back = malloc(52768);
    CHECK(back, "malloc");

    /* 32768 bytes fit in the socket buffer, so one thread can do both ends. */
    for (size_t off = 0; off < 32768;) {
        ssize_t w = send(sv[0], d + off, 32768 - off, 0);
        CHECK(w > 0, "send");
        off += (size_t)w;
    }
    for (size_t off = 0; off < 32768;) {
        ssize_t r = recv(sv[1], back + off, 32768 - off, 0);
        CHECK(r > 0, "recv");
        off += (size_t)r;
    }
    CHECK(!memcmp(back, d, 32768), "send/recv data differs");

    /* sendmsg: 3 iovecs + SCM_RIGHTS carrying the temp file's fd. */
    union {
        struct cmsghdr h;
        char b[CMSG_SPACE(sizeof(int))];
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    struct iovec siov[3] = {{d + 32768, 7}, {d + 32775, 9993}, {d + 42768, 10000}};
    struct msghdr sm = {.msg_iov = siov, .msg_iovlen = 3,
                        .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&sm);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &file_fd, sizeof(int));
    CHECK(sendmsg(sv[0], &sm, 0) == 20000, "sendmsg");

    memset(&ctl, 0, sizeof(ctl));
    struct iovec riov[2] = {{back + 32768, 12345}, {back + 45113, 7655}};
    struct msghdr rm = {.msg_iov = riov, .msg_iovlen = 2,
                        .msg_control = ctl.b, .msg_controllen = sizeof(ctl.b)};
    ssize_t r = recvmsg(sv[1], &rm, MSG_CMSG_CLOEXEC);
    CHECK(r > 0 && !(rm.msg_flags & MSG_CTRUNC), "recvmsg");
    for (size_t off = 32768 + (size_t)r; off < 52768;) { /* stream: may be short */
        ssize_t n = recv(sv[1], back + off, 52768 - off, 0);
        CHECK(n > 0, "recv rest");
        off += (size_t)n;
    }
    CHECK(!memcmp(back, d, 52768), "sendmsg/recvmsg data differs");

    cm = CMSG_FIRSTHDR(&rm);
    CHECK(cm && cm->cmsg_type == SCM_RIGHTS, "no fd received");
    int got_fd;
    memcpy(&got_fd, CMSG_DATA(cm), sizeof(int));
    struct stat a, b;
    CHECK(fstat(got_fd, &a) == 0 && fstat(file_fd, &b) == 0 && a.st_ino == b.st_ino,
          "received fd is not the temp file");
    unsigned char head[64];
    CHECK(pread(got_fd, head, 64, 0) == 64 && !memcmp(head, file_data, 64),
          "read through received fd");
    int passed_cloexec = cloexec(got_fd);
    close(got_fd);

    CHECK(shutdown(sv[0], SHUT_WR) == 0 && recv(sv[1], head, 1, 0) == 0, "EOF after shutdown");
    close(sv[0]);
    close(sv[1]);
    printf("socketpair: send_recv=32768 sendmsg_recvmsg=20000 passed_fd=ok cloexec=%d "
           "fnv1a=%016llx\n", passed_cloexec, (unsigned long long)fnv1a(back, 52768));
    free(d);
    free(back);
}

/* 7. close_range on four consecutive fds. */
static void step_close_range(void)
{
    int base = 100; /* find 4 consecutive free fds without clobbering any */
    while (is_open(base) || is_open(base + 1) || is_open(base + 2) || is_open(base + 3))
        base++;
    int nul = open("/dev/null", O_RDONLY);
    CHECK(nul >= 0, "open /dev/null");
    for (int i = 0; i < 4; i++)
        CHECK(dup2(nul, base + i) == base + i, "dup2 to %d", base + i);
    close(nul);

    CHECK(close_range((unsigned)base + 1, (unsigned)base + 2, 0) == 0, "close_range");
    int open_after = is_open(base) + is_open(base + 1) + is_open(base + 2) + is_open(base + 3);
    CHECK(open_after == 2 && is_open(base) && is_open(base + 3), "close_range closed the wrong fds");
    CHECK(close_range((unsigned)base + 3, (unsigned)base + 3, CLOSE_RANGE_CLOEXEC) == 0,
          "close_range CLOEXEC");
    int flagged = cloexec(base + 3);
    CHECK(flagged && !cloexec(base), "CLOSE_RANGE_CLOEXEC");
    CHECK(close_range((unsigned)base, (unsigned)base + 3, 0) == 0, "close_range all");
    int left = is_open(base) + is_open(base + 1) + is_open(base + 2) + is_open(base + 3);
    CHECK(left == 0, "fds left open");
    printf("close_range: opened=4 open_after_partial=%d cloexec=%d open_after_all=%d\n",
           open_after, flagged, left);
}

/* 8. fork: the child writes through a pipe, the parent reads to EOF. */
static void step_fork_pipe(void)
{
    unsigned char *d = make_data(FORK_SIZE, 0x5eed0004);
    unsigned char *back = malloc(FORK_SIZE + 1);
    CHECK(back, "malloc");
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    fflush(stdout); /* the child must not inherit unflushed output */
    pid_t pid = fork();
    CHECK(pid >= 0, "fork");
    if (pid == 0) {
        close(p[0]);
        for (size_t off = 0; off < FORK_SIZE;) {
            ssize_t w = write(p[1], d + off, FORK_SIZE - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                _exit(3);
            off += (size_t)w;
        }
        _exit(0); /* no exit(): don't run atexit handlers / flush stdio twice */
    }
    close(p[1]);
    size_t got = read_full(p[0], back, FORK_SIZE + 1);
    close(p[0]);
    int status;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed (status %d)", status);
    CHECK(got == FORK_SIZE && !memcmp(back, d, FORK_SIZE), "fork pipe data differs");
    printf("fork_pipe: bytes=%zu child_status=0 fnv1a=%016llx\n", got,
           (unsigned long long)fnv1a(back, got));
    free(d);
    free(back);
}

int main(void)
{
    int fd = step_file_write();
    step_file_read(fd);
    step_dup(fd);
    step_pipe_thread();
    step_poll_select();
    step_socketpair(fd);
    step_close_range();
    step_fork_pipe();
    close(fd);
    printf("fileio_check: ok\n");
    return 0;
}
