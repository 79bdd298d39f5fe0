/* stallguard.h — optional cooperation with libstallguard.so for programs that can be rebuilt.
 *
 * Everything here is declared weak: a program built against this header runs unchanged with
 * or without the library preloaded. Without it the symbols are null and the stallguard_try_*
 * wrappers below return -1 with errno ENOSYS; with it they act on the running guard.
 *
 *   LD_PRELOAD=/usr/local/lib/libstallguard.so ./server     (guarded, cooperating)
 *   ./server                                                 (unguarded, same binary)
 */
#ifndef STALLGUARD_H
#define STALLGUARD_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Counters of this process's guard. Append-only: pass sizeof(struct stallguard_counters). */
struct stallguard_counters {
    uint64_t tracked;            /* connections being watched now */
    uint64_t waiting;            /* of which on the client's turn */
    uint64_t reaped_total;       /* connections shut down so far */
    uint64_t rejected_over_cap;  /* refused at accept for STALLGUARD_PER_SOURCE */
    /* reaped by reason: first_byte, request, idle, write_stall, lifetime, connect, manual,
     * deadline */
    uint64_t reaped[8];
};

/* Never judge this connection again (a long poll, a stream, a trusted peer).
 * 0, or -1 with errno ENOENT if fd is not a guarded connection. */
int stallguard_exempt(int fd) __attribute__((weak));

/* This connection must be done within ms milliseconds from now, whoever has the turn
 * (reap reason "deadline"); 0 removes it. 0, or -1 with errno ENOENT. */
int stallguard_set_deadline(int fd, unsigned int ms) __attribute__((weak));

/* Copies the counters (at most size bytes). 0, or -1 with errno EINVAL. */
int stallguard_counters(struct stallguard_counters *out, size_t size) __attribute__((weak));

/* Is the library loaded in this process? */
static inline int stallguard_present(void) { return stallguard_exempt != NULL; }

static inline int stallguard_try_exempt(int fd)
{
    if (!stallguard_exempt) {
        errno = ENOSYS;
        return -1;
    }
    return stallguard_exempt(fd);
}

static inline int stallguard_try_set_deadline(int fd, unsigned int ms)
{
    if (!stallguard_set_deadline) {
        errno = ENOSYS;
        return -1;
    }
    return stallguard_set_deadline(fd, ms);
}

static inline int stallguard_try_counters(struct stallguard_counters *out)
{
    if (!stallguard_counters) {
        errno = ENOSYS;
        return -1;
    }
    return stallguard_counters(out, sizeof(*out));
}

#ifdef __cplusplus
}
#endif
#endif
