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
    // SAFETY: `word` points into a live shared mapping (the caller's contract).
    unsafe { futex_wait(word, libc::FUTEX_WAIT, expected, ms) };
}

/// FUTEX_WAIT (`op`: shared, or with FUTEX_PRIVATE_FLAG) on `word` while it holds
/// `expected`, for at most `ms`.
///
/// # Safety
/// `word` points at a live, aligned 32-bit word (the kernel only reads it).
unsafe fn futex_wait(word: *const u32, op: libc::c_int, expected: u32, ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as libc::c_long,
    };
    // SAFETY: the caller's contract for `word`; `ts` is a valid relative timeout.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word,
            op,
            expected,
            &ts as *const libc::timespec,
        )
    };
}

/// Wakes every thread of this process waiting on `word` with [`wait_private`] or
/// [`wait_either`]. Async-signal-safe (one raw syscall), and errno is left as it was: the
/// hooks call it.
pub fn wake_private(word: &std::sync::atomic::AtomicU32) {
    let _errno = crate::abi::errno::ErrnoGuard::new();
    // SAFETY: `word` is a live atomic of this process; FUTEX_WAKE only uses its address as a
    // key and touches no memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
}

/// Sleeps up to `ms` while `word` (a word of this process) holds `expected`; returns at once
/// if it does not, and early when [`wake_private`] is called on it.
pub fn wait_private(word: &std::sync::atomic::AtomicU32, expected: u32, ms: u64) {
    // SAFETY: `word` is a live atomic of this process.
    unsafe {
        futex_wait(
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ms,
        )
    };
}

/// `struct futex_waitv` (linux/futex.h), for `futex_waitv(2)`.
#[repr(C)]
struct FutexWaitv {
    val: u64,
    uaddr: u64,
    flags: u32,
    reserved: u32,
}
const FUTEX2_SIZE_U32: u32 = 0x02;
const FUTEX2_PRIVATE: u32 = 128;

/// Sleeps up to `ms` while both `own` (a word of this process) holds `own_expected` and
/// `shared` (a word of a shared mapping) holds `shared_expected`, waking early when either
/// is woken (futex_waitv, Linux 5.16). `Err(errno)`: not slept (ENOSYS on older kernels,
/// EAGAIN when a word had already changed).
pub fn wait_either(
    own: &std::sync::atomic::AtomicU32,
    own_expected: u32,
    shared: *const u32,
    shared_expected: u32,
    ms: u64,
) -> Result<(), c_int> {
    let waiters = [
        FutexWaitv {
            val: u64::from(own_expected),
            uaddr: own.as_ptr() as u64,
            flags: FUTEX2_SIZE_U32 | FUTEX2_PRIVATE,
            reserved: 0,
        },
        FutexWaitv {
            val: u64::from(shared_expected),
            uaddr: shared as u64,
            flags: FUTEX2_SIZE_U32,
            reserved: 0,
        },
    ];
    // futex_waitv takes an absolute timeout on the given clock.
    let (secs, nanos) = monotonic();
    let until = secs * 1_000_000_000 + nanos + ms * 1_000_000;
    let ts = libc::timespec {
        tv_sec: (until / 1_000_000_000) as libc::time_t,
        tv_nsec: (until % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: two valid waiters on live words (`own` ours, `shared` the caller's live shared
    // mapping), which the kernel only reads; `ts` is a valid absolute timeout.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex_waitv,
            waiters.as_ptr(),
            waiters.len() as libc::c_uint,
            0 as libc::c_uint,
            &ts as *const libc::timespec,
            libc::CLOCK_MONOTONIC,
        )
    };
    if r >= 0 {
        return Ok(());
    }
    match crate::abi::errno::errno() {
        libc::ETIMEDOUT | libc::EINTR => Ok(()),
        e => Err(e),
    }
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

/// Whether the process has a single thread now (the constructor asks, before our watcher
/// exists). glibc's `__libc_single_threaded` (glibc 2.32 and later) turns false when glibc
/// creates the process's first other thread and stays false (glibc 2.36 leaves it false even
/// in a forked child): only then is `/proc/self/status` asked how many are left (a thread
/// another library's constructor started and that ended, or a library loaded late).
pub fn single_threaded_now() -> bool {
    // SAFETY: a NUL-terminated name; RTLD_DEFAULT looks in the global scope, where libc is.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"__libc_single_threaded".as_ptr()) };
    // SAFETY: the symbol is a `char` in libc's data, which lives as long as the process.
    if !p.is_null() && unsafe { std::ptr::read_volatile(p.cast::<libc::c_char>()) } != 0 {
        return true;
    }
    let mut buf = [0u8; 4096];
    let n = read_small_file(c"/proc/self/status", &mut buf);
    threads_in_status(&buf[..n]) == Some(1)
}

/// The thread count of a `/proc/PID/status` text (its `Threads:` line).
fn threads_in_status(status: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(status).ok()?;
    let line = text.lines().find(|l| l.starts_with("Threads:"))?;
    line["Threads:".len()..].trim().parse().ok()
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

/// Registers the three fork handlers: before fork (in the parent), after it in the parent,
/// and in the child.
pub fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: registers function pointers; no memory is handed over.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
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

/// Creates or truncates `path` (0666 before the umask) and writes `bytes` to it, through the
/// real write and close: the watcher's own descriptors must never pass through the hooks (in
/// its own fd table their numbers may equal the program's tracked connections').
pub fn write_file(path: &std::path::Path, bytes: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is NUL-terminated.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o666,
        )
    };
    if fd < 0 {
        return false;
    }
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: `rest` is valid for reads of its length; the real write, not our hook.
        let n = unsafe { super::real::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            break;
        }
        rest = &rest[n as usize..];
    }
    close_own(fd);
    rest.is_empty()
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

// ---------------------------------------------------------------- fd tables and pidfds
//
// Raw system calls on purpose: `unshare` and `close_range` are interposed, and the watcher
// must never run the program's bookkeeping for them (its close_range closes only its own,
// private table; the program's slots must stay tracked).

/// `pidfd_open`'s flag for a pidfd naming one thread (Linux 6.9+; `O_EXCL`).
pub const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// The result of a system call returning a descriptor or 0: the value, or errno.
fn syscall_result(rc: libc::c_long) -> Result<c_int, c_int> {
    if rc < 0 {
        Err(super::errno::errno())
    } else {
        Ok(rc as c_int)
    }
}

/// `unshare(CLONE_FILES)`: the calling thread gets a private copy of the fd table.
pub fn unshare_files() -> Result<(), c_int> {
    // SAFETY: integers only.
    syscall_result(unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_FILES) }).map(|_| ())
}

/// Closes `first..=last` in the calling thread's fd table (raw close_range, no hook).
pub fn close_range_raw(first: libc::c_uint, last: libc::c_uint) {
    if first <= last {
        // SAFETY: integers only; the caller owns every descriptor in the range of its table.
        unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
    }
}

/// `pidfd_open(pid, flags)`: a descriptor naming process (or, with [`PIDFD_THREAD`], thread)
/// `pid`, close-on-exec.
pub fn pidfd_open(pid: i32, flags: libc::c_uint) -> Result<c_int, c_int> {
    // SAFETY: integers only.
    syscall_result(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, flags) })
}

/// `pidfd_getfd(pidfd, fd, 0)`: a close-on-exec copy, in the caller's table, of the file that
/// `fd` names in the fd table of the task behind `pidfd`.
pub fn pidfd_getfd(pidfd: c_int, fd: c_int) -> Result<c_int, c_int> {
    // SAFETY: integers only.
    syscall_result(unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd, fd, 0) })
}

/// Whether the kernel offers `pidfd_open` and `pidfd_getfd` to this process (not ENOSYS, not
/// refused by a seccomp filter), asked with invalid arguments so that no descriptor is created.
pub fn pidfd_calls_available() -> Result<(), c_int> {
    // SAFETY: integers only; flags ~0 are refused (EINVAL) before anything is opened.
    let open = unsafe { libc::syscall(libc::SYS_pidfd_open, getpid(), !0u32) };
    let open_errno = super::errno::errno();
    if open >= 0 {
        close_own(open as c_int); // cannot happen (invalid flags), but never leak
    } else if open_errno != libc::EINVAL {
        return Err(open_errno);
    }
    // SAFETY: integers only; pidfd -1 is refused (EBADF).
    let get = unsafe { libc::syscall(libc::SYS_pidfd_getfd, -1, 0, 0) };
    match super::errno::errno() {
        _ if get >= 0 => {
            close_own(get as c_int);
            Ok(())
        }
        libc::EBADF => Ok(()),
        other => Err(other),
    }
}

/// Whether a seccomp filter applies to the calling thread (PR_GET_SECCOMP = 2). The watcher
/// then makes no system call it did not make before it had a table of its own: a filter may
/// kill the process on a call it does not know (SECCOMP_RET_KILL), and a probe would be that
/// call.
pub fn seccomp_filtered() -> bool {
    // SAFETY: PR_GET_SECCOMP takes no pointer.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP) == 2 }
}

/// The calling thread's id.
pub fn gettid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::gettid() }
}

/// The (device, inode) of the file `fd` names, to recognise one of our own files.
pub fn file_id(fd: c_int) -> Option<(u64, u64)> {
    // SAFETY: stat is plain data; all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one stat.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// The (device, inode) of the file at `path` (None: nothing there, or it cannot be looked
/// at): compared with [`file_id`] of an open descriptor, it tells whether the file was
/// replaced (log rotation).
pub fn path_id(path: &CStr) -> Option<(u64, u64)> {
    // SAFETY: stat is plain data; all-zero is valid.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `st` is valid for writes.
    (unsafe { libc::stat(path.as_ptr(), &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// Reads up to `buf.len()` bytes of a small file (a /proc entry) through the real read and
/// close: the watcher's own descriptors must never pass through the hooks. Returns the
/// bytes read (0 when it cannot be read).
pub fn read_small_file(path: &CStr, buf: &mut [u8]) -> usize {
    // SAFETY: `path` is NUL-terminated.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return 0;
    }
    // SAFETY: `buf` is valid for writes of its length.
    let n = unsafe { super::real::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    close_own(fd);
    n.max(0) as usize
}

/// Gives the pages of an anonymous private mapping back: they read as zeroes again.
///
/// # Safety
/// `p..p+bytes` is a mapping made by [`map_anonymous`] that no one writes concurrently.
pub unsafe fn zero_pages(p: *mut u8, bytes: usize) {
    // SAFETY: the caller's contract.
    unsafe { libc::madvise(p.cast(), bytes, libc::MADV_DONTNEED) };
}

/// Fills the standard descriptor numbers 0–2 of the calling thread's (private) table with
/// copies of `fd`, so that nothing written to "stderr" on this thread (a panic message) can
/// land in a socket copy that would otherwise take number 2.
pub fn occupy_std_fds(fd: c_int) {
    loop {
        // SAFETY: F_DUPFD_CLOEXEC takes an integer argument; the real fcntl, not our hook.
        let copy = unsafe { super::real::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if copy < 0 {
            return;
        }
        if copy > 2 {
            close_own(copy);
            return;
        }
    }
}

/// The calling thread's identity (`pthread_self`): a load from the thread pointer, no system
/// call. Unique among live threads; a dead thread's value may be reused by a new thread.
#[inline(always)]
pub fn thread_self() -> u64 {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    unsafe { libc::pthread_self() as u64 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_line_of_proc_status() {
        let status = b"Name:\tcat\nUmask:\t0022\nState:\tR (running)\nThreads:\t3\nSigQ:\t0/1\n";
        assert_eq!(threads_in_status(status), Some(3));
        assert_eq!(threads_in_status(b"Name:\tx\n"), None);
        assert_eq!(threads_in_status(b"Threads:\tmany\n"), None);
    }

    /// The unit-test binary has several threads (the test harness's).
    #[test]
    fn this_test_process_is_counted() {
        let mut buf = [0u8; 4096];
        let n = read_small_file(c"/proc/self/status", &mut buf);
        assert!(threads_in_status(&buf[..n]).is_some_and(|t| t >= 1));
    }
}
