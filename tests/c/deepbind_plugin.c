/* deepbind_plugin: loaded by unseen_cancel with RTLD_DEEPBIND, so its calls to
 * pthread_create and pthread_cancel bind to libc's definitions before the shim's exports.
 * deepbind_start(target, fd): a thread that cancels `target` after 0.2 s, then writes a byte
 * to `fd` 0.2 s later (so a read that ignored the cancel returns instead of hanging). */
#define _GNU_SOURCE
#include <pthread.h>
#include <unistd.h>

static pthread_t target;
static int wake_fd;

static void *run(void *arg)
{
    (void)arg;
    usleep(200000);
    pthread_cancel(target);
    usleep(200000);
    if (write(wake_fd, "x", 1) != 1)
        return NULL;
    return NULL;
}

void deepbind_start(pthread_t t, int fd)
{
    target = t;
    wake_fd = fd;
    pthread_t th;
    if (pthread_create(&th, NULL, run, NULL) == 0)
        pthread_detach(th);
}
