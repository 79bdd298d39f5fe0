/* atfork_restart_main: forks with a tracked loopback connection open; the child blocks in
 * read(2) on it while the worker thread libatfork_restart.so started in the child (from its
 * fork child handler, which runs before the shim's) cancels it. Prints
 * `atfork_restart: child cancelled` (the child's cleanup handler ran, exit 0) or how the child
 * ended; the child's hang ends by SIGALRM after 5 s. Exit 0 only if the child was cancelled. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include "harness.h"

static void cleanup(void *arg)
{
    (void)arg;
    _exit(0);
}

int main(void)
{
    int srv, cli;
    const char *failed = loopback_pair(&srv, &cli, -1);
    if (failed) {
        fprintf(stderr, "atfork_restart: %s: %s\n", failed, strerror(errno));
        return 2;
    }
    pid_t pid = fork();
    if (pid < 0)
        return perror("fork"), 2;
    if (pid == 0) {
        alarm(5);
        char c;
        ssize_t n;
        pthread_cleanup_push(cleanup, NULL);
        n = read(srv, &c, 1);
        pthread_cleanup_pop(0);
        _exit(n < 0 ? 4 : 1);
    }
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return perror("waitpid"), 2;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        puts("atfork_restart: child cancelled");
        return 0;
    }
    if (WIFSIGNALED(st))
        printf("atfork_restart: child killed by signal %d (hung in read)\n", WTERMSIG(st));
    else
        printf("atfork_restart: child exited %d (read returned)\n", WEXITSTATUS(st));
    return 1;
}
