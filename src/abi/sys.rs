//! The system calls the shim makes for itself (memory, clocks, threads, signals, files),
//! each wrapped once with its reason to be sound. None of them is hooked: a call through a
//! hooked function goes through `super::real`.

use libc::c_int;
use std::ffi::CStr;

// ---------------------------------------------------------------- memory

/// mmap of `bytes`, read-write, with `flags`, of `fd` (-1: anonymous).
fn map(bytes: usize, flags: c_int, fd: c_int) -> Option<*mut u8> {
    // SAFETY: a new mapping at an address the kernel chooses aliases no Rust memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p.cast())
}

/// A fresh anonymous mapping of `bytes` (zeroed, `MAP_NORESERVE`: the kernel backs a page
/// only when it is written). `shared`: shared with the children this process forks.
pub fn map_anonymous(bytes: usize, shared: bool) -> Option<*mut u8> {
    let sharing = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    map(
        bytes,
        sharing | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
    )
}

/// Maps `bytes` of the file `fd` (the shim's own) shared, read-write.
pub fn map_file_shared(fd: c_int, bytes: usize) -> Option<*mut u8> {
    map(bytes, libc::MAP_SHARED, fd)
}

/// Unmaps a mapping made by [`map_file_shared`].
///
/// # Safety
/// No reference into the mapping may be used afterwards.
pub unsafe fn unmap(p: *mut u8, bytes: usize) {
    // SAFETY: the caller's contract.
    unsafe { libc::munmap(p.cast(), bytes) };
}

// ---------------------------------------------------------------- clocks and threads

fn clock(id: libc::clockid_t) -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec (vDSO, async-signal-safe).
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts
}

/// CLOCK_MONOTONIC as (seconds, nanoseconds).
pub fn monotonic() -> (u64, u64) {
    let ts = clock(libc::CLOCK_MONOTONIC);
    (ts.tv_sec as u64, ts.tv_nsec as u64)
}

/// CLOCK_REALTIME as (seconds since the epoch, nanoseconds).
pub fn realtime() -> (i64, i64) {
    let ts = clock(libc::CLOCK_REALTIME);
    (ts.tv_sec, ts.tv_nsec)
}

/// Sleeps up to `ms` milliseconds, or until another process changes the 32-bit word at
/// `word` from `expected` and wakes it (FUTEX_WAKE on the same shared mapping). Returns at
/// once if the word no longer holds `expected`.
pub fn wait_on_shared_word(word: *const u32, expected: u32, ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: `word` points into a live shared mapping (the caller's contract); the kernel
    // only reads it; `ts` is a valid relative timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        )
    };
}

/// Sleeps `ms` milliseconds on the monotonic clock.
pub fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: reads one timespec; no remainder is asked for.
    unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &ts, std::ptr::null_mut()) };
}

/// Gives the CPU away (spinning on a state another thread is about to change).
pub fn yield_now() {
    // SAFETY: no arguments, no memory.
    unsafe { libc::sched_yield() };
}

/// Starts a detached thread running `main` with every signal blocked (so no host signal
/// handler ever runs on it) and a 256 KiB stack. False if it could not be created.
pub fn spawn_quiet_thread(main: extern "C" fn(*mut libc::c_void) -> *mut libc::c_void) -> bool {
    // SAFETY: every pointer passed below is to a local of the right type; the attribute is
    // initialised before use and destroyed after; the caller's mask is restored.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        libc::pthread_attr_init(&mut attr);
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        libc::pthread_attr_setstacksize(&mut attr, 256 * 1024);
        let mut tid: libc::pthread_t = 0;
        let rc = libc::pthread_create(&mut tid, &attr, main, std::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        rc == 0
    }
}

/// Names the calling thread (prctl from inside: pthread_setname_np on another thread opens
/// /proc/self/task/TID/comm, briefly taking the program's lowest free fd number).
pub fn name_this_thread(name: &CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

// ---------------------------------------------------------------- process

pub fn getpid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::getpid() }
}

/// Ends the process at once with `status` (no atexit handlers, no unwinding).
pub fn exit_now(status: c_int) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(status) }
}

/// Registers a handler run in the child after fork.
pub fn at_fork_child(child: unsafe extern "C" fn()) {
    // SAFETY: registers a function pointer; no memory is handed over.
    unsafe { libc::pthread_atfork(None, None, Some(child)) };
}

/// Registers a handler run in the parent right before fork.
pub fn at_fork_prepare(prepare: unsafe extern "C" fn()) {
    // SAFETY: registers a function pointer; no memory is handed over.
    unsafe { libc::pthread_atfork(Some(prepare), None, None) };
}

/// Registers a handler run at exit.
pub fn at_exit(handler: extern "C" fn()) {
    // SAFETY: registers a function pointer.
    unsafe { libc::atexit(handler) };
}

/// Whether a process `pid` is known to be gone (ESRCH).
pub fn process_gone(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    rc != 0 && super::errno::errno() == libc::ESRCH
}

/// Whether `pid` is a child of this process that has exited and not yet been waited for (a
/// zombie, which `kill(pid, 0)` still finds). Leaves it for the program to wait for.
pub fn exited_child(pid: i32) -> bool {
    // SAFETY: a zeroed siginfo_t is valid; waitid writes at most one.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: WNOWAIT: only looks, the child stays waitable; WNOHANG: never blocks.
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: waitid filled `info` (si_pid 0 when the child has not exited).
    rc == 0 && unsafe { info.si_pid() } == pid
}

/// The soft RLIMIT_NOFILE.
pub fn nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: writes one rlimit.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim.rlim_cur
}

// ---------------------------------------------------------------- signals

/// Whether SIGPIPE is ignored right now (one rt_sigaction query, no change).
pub fn sigpipe_is_ignored() -> bool {
    // SAFETY: sigaction is plain data; all-zero is valid.
    let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a query (null new action) that writes one sigaction.
    let rc = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut current) };
    rc == 0 && current.sa_sigaction == libc::SIG_IGN
}

/// Delivers SIGPIPE to the calling thread of process `pid`, as the kernel does for a write to
/// a closed peer.
pub fn raise_sigpipe(pid: i32) {
    // SAFETY: tgkill takes integers only.
    unsafe { libc::syscall(libc::SYS_tgkill, pid, libc::gettid(), libc::SIGPIPE) };
}

/// Runs `run` with SIGPIPE blocked for the calling thread, then restores the mask, unless
/// SIGPIPE was blocked already (then the mask is the program's business). Before restoring,
/// a pending SIGPIPE is taken away if `ours()` says the shim caused it. errno is `run`'s.
#[inline(always)]
pub fn with_sigpipe_blocked<R>(run: impl FnOnce() -> R, ours: impl FnOnce() -> bool) -> R {
    // SAFETY: sigset_t is plain data; all-zero is valid.
    let (mut pipe, mut old): (libc::sigset_t, libc::sigset_t) =
        unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
    // SAFETY: sigemptyset/sigaddset/pthread_sigmask write only into the two local sets.
    unsafe {
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old);
    }
    let r = run();
    let _errno = super::errno::ErrnoGuard::new();
    // SAFETY: `old` was filled by pthread_sigmask.
    if unsafe { libc::sigismember(&old, libc::SIGPIPE) } == 0 {
        if ours() {
            let zero = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: waits zero time for SIGPIPE, which this thread has blocked.
            unsafe { libc::sigtimedwait(&pipe, std::ptr::null_mut(), &zero) };
        }
        // SAFETY: reads `old`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    }
    r
}

// ---------------------------------------------------------------- files

/// Opens `path` for appending (created 0640), close-on-exec; -1 on failure (errno set).
pub fn open_append(path: &CStr) -> c_int {
    // SAFETY: `path` is NUL-terminated.
    unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC,
            0o640,
        )
    }
}

/// Creates `path` exclusively (0600, close-on-exec, no symlink followed), read-write.
pub fn create_exclusive(path: &CStr) -> c_int {
    // SAFETY: `path` is NUL-terminated.
    unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            0o600,
        )
    }
}

/// Closes a descriptor the shim owns, through the real close (the close hook would try to
/// forget it).
pub fn close_own(fd: c_int) {
    // SAFETY: closing a descriptor touches no memory; the caller owns `fd`.
    unsafe { super::real::close(fd) };
}

/// Gives free heap memory back to the kernel (after the watcher dropped a large buffer,
/// which glibc would otherwise keep for the process's lifetime).
pub fn release_free_memory() {
    // SAFETY: malloc_trim takes no pointer; it only returns unused pages of the heap.
    unsafe { libc::malloc_trim(0) };
}

/// The last access time of the file at `path`, in milliseconds since the epoch.
pub fn atime_unix_ms(path: &CStr) -> Option<u64> {
    // SAFETY: `struct stat` is plain data; all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is valid for writes.
    if unsafe { libc::stat(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.st_atime.max(0) as u64) * 1000 + (st.st_atime_nsec.max(0) as u64) / 1_000_000)
}

pub fn unlink(path: &CStr) {
    // SAFETY: `path` is NUL-terminated.
    unsafe { libc::unlink(path.as_ptr()) };
}

/// Sets the size of the file `fd`.
pub fn truncate(fd: c_int, bytes: usize) -> bool {
    // SAFETY: integers only.
    unsafe { libc::ftruncate(fd, bytes as libc::off_t) == 0 }
}

/// Whether `fd` is open and not a socket.
pub fn is_open_non_socket(fd: c_int) -> bool {
    // SAFETY: stat is plain data; all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one stat.
    unsafe { libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) != libc::S_IFSOCK }
}
