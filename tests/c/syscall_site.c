/* syscall_site: which object made the read(2) system call of a plain single-threaded program:
 * glibc's wrapper (`libc`) or the shim itself (`guard`, its direct system call). A seccomp
 * filter traps read on fd 1000 only (SECCOMP_RET_TRAP: the call is not made); the SIGSYS
 * handler keeps the address of the system call instruction (si_call_addr), which dladdr then
 * names. Prints `syscall_site: read from libc|guard|OTHER`. Nothing else is filtered. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include "harness.h"

#define PROBE_FD 1000

static void *volatile call_addr;

static void on_sigsys(int sig, siginfo_t *si, void *ctx)
{
    (void)sig;
    (void)ctx;
    call_addr = si->si_call_addr;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigsys;
    sa.sa_flags = SA_SIGINFO;
    if (sigaction(SIGSYS, &sa, NULL) != 0)
        return perror("sigaction"), 2;
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_read, 0, 3),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, PROBE_FD, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        return perror("seccomp"), 2;
    char b;
    if (read(PROBE_FD, &b, 1) < -1 || !call_addr)
        return fprintf(stderr, "syscall_site: read was not trapped\n"), 2;
    Dl_info d;
    const char *who = "unknown";
    if (dladdr(call_addr, &d) && d.dli_fname) {
        const char *base = strrchr(d.dli_fname, '/');
        base = base ? base + 1 : d.dli_fname;
        who = strstr(base, "stallguard") ? "guard" : strncmp(base, "libc.so", 7) == 0 ? "libc" : base;
    }
    printf("syscall_site: read from %s\n", who);
    return 0;
}
