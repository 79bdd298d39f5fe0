/* atfork_restart: a library, linked into atfork_restart_main (DT_NEEDED, so its constructor
 * registers its fork handler before the preloaded shim's constructor runs), that restarts its
 * worker thread in a forked child from its pthread_atfork child handler, as libraries with a
 * background thread do. The worker cancels the thread that forked, after 0.2 s. */
#define _GNU_SOURCE
#include <pthread.h>
#include <unistd.h>

static pthread_t target;

static void *worker(void *arg)
{
    (void)arg;
    usleep(200000);
    pthread_cancel(target);
    return NULL;
}

static void in_child(void)
{
    target = pthread_self();
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) == 0)
        pthread_detach(t);
}

__attribute__((constructor)) static void init(void)
{
    pthread_atfork(NULL, NULL, in_child);
}
