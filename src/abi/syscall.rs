//! The system call instruction itself, for the real functions that may skip glibc's wrapper
//! (`route`: only in a process where no thread of the program's can cancel another).
//!
//! It does exactly what glibc's `INLINE_SYSCALL` does and nothing else: the number and the
//! arguments in the kernel's registers, the instruction, and a return value in
//! `-4095..=-1` turned into -1 with errno set (out of line: the success path needs no stack
//! frame). Signals are the kernel's business either way: with `SA_RESTART` the kernel
//! restarts the call by re-executing the instruction (it rewinds the instruction pointer and
//! restores the number register; the argument registers are never changed), without it the
//! call returns -EINTR; glibc's wrapper adds nothing to either.
//!
//! `nr` names the system call each row maps to (`interpose.rs`, the `sys(..)` column) on this
//! architecture, `None` where glibc's wrapper does more than one call (aarch64 has no `poll`:
//! glibc converts the timeout for `ppoll`).

use super::errno::set_errno;
use libc::{c_int, c_long, ssize_t};

/// Whether this architecture has the instruction here (elsewhere every call goes to glibc).
/// 64-bit only: x32 (`x86_64` with 32-bit pointers) numbers its calls apart and passes
/// 64-bit arguments its own way.
pub const AVAILABLE: bool = cfg!(all(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    target_pointer_width = "64"
));

/// The system call numbers of the rows, as glibc 2.36's wrappers use them (`recv` and `send`
/// are `recvfrom` and `sendto` with no address, `accept` is `accept`); all `None` where the
/// instruction is not written here.
macro_rules! numbers {
    ($($row:ident => $sys:ident),* ; x86_64 only: $($x:ident => $xsys:ident),*) => {
        #[allow(non_upper_case_globals)]
        pub mod nr {
            use libc::c_long;
            $(
                #[cfg(all(any(target_arch = "x86_64", target_arch = "aarch64"), target_pointer_width = "64"))]
                pub const $row: Option<c_long> = Some(libc::$sys);
                #[cfg(not(all(any(target_arch = "x86_64", target_arch = "aarch64"), target_pointer_width = "64")))]
                pub const $row: Option<c_long> = None;
            )*
            $(
                #[cfg(all(target_arch = "x86_64", target_pointer_width = "64"))]
                pub const $x: Option<c_long> = Some(libc::$xsys);
                #[cfg(not(all(target_arch = "x86_64", target_pointer_width = "64")))]
                pub const $x: Option<c_long> = None;
            )*
        }
    };
}

numbers! {
    read => SYS_read, readv => SYS_readv, recvfrom => SYS_recvfrom, recvmsg => SYS_recvmsg,
    write => SYS_write, writev => SYS_writev, sendto => SYS_sendto, sendmsg => SYS_sendmsg,
    accept => SYS_accept, accept4 => SYS_accept4, connect => SYS_connect, close => SYS_close;
    // aarch64 has no `poll`: glibc's wrapper converts the timeout for `ppoll` there.
    x86_64 only: poll => SYS_poll
}

/// One argument as the kernel takes it: a register's worth, sign-extended from a C `int` as
/// glibc passes it (`(long) fd`), zero-extended from unsigned types, a pointer's address.
pub trait Word {
    fn word(self) -> usize;
}
impl Word for c_int {
    #[inline(always)]
    fn word(self) -> usize {
        self as isize as usize
    }
}
impl Word for u32 {
    #[inline(always)]
    fn word(self) -> usize {
        self as usize
    }
}
impl Word for usize {
    #[inline(always)]
    fn word(self) -> usize {
        self
    }
}
impl Word for u64 {
    #[inline(always)]
    fn word(self) -> usize {
        self as usize
    }
}
impl<T> Word for *const T {
    #[inline(always)]
    fn word(self) -> usize {
        self as usize
    }
}
impl<T> Word for *mut T {
    #[inline(always)]
    fn word(self) -> usize {
        self as usize
    }
}

/// What a row returns: `int` or `ssize_t`.
pub trait Ret: Copy {
    fn from_raw(raw: isize) -> Self;
}
impl Ret for c_int {
    #[inline(always)]
    fn from_raw(raw: isize) -> Self {
        raw as c_int
    }
}
impl Ret for ssize_t {
    #[inline(always)]
    fn from_raw(raw: isize) -> Self {
        raw
    }
}

/// The kernel's return value as the C function returns it: itself, or -1 with errno.
#[inline(always)]
pub fn result<R: Ret>(raw: isize) -> R {
    // glibc's test: an unsigned value above -4096 is an error number.
    if raw as usize > -4096isize as usize {
        return failed(raw);
    }
    R::from_raw(raw)
}

#[cold]
#[inline(never)]
fn failed<R: Ret>(raw: isize) -> R {
    set_errno(-raw as c_int);
    R::from_raw(-1)
}

/// Makes system call `nr` with the given arguments (each a [`Word`]) and returns the
/// kernel's raw value (`-errno` on failure): `raw_syscall!(nr; a, b, c)`.
macro_rules! raw_syscall {
    ($nr:expr; $a:expr, $b:expr, $c:expr) => {
        $crate::abi::syscall::call3(
            $nr,
            $crate::abi::syscall::w($a),
            $crate::abi::syscall::w($b),
            $crate::abi::syscall::w($c),
        )
    };
    ($nr:expr; $($x:expr),+) => {
        $crate::abi::syscall::call6(
            $nr,
            $crate::abi::syscall::six([$($crate::abi::syscall::w($x)),+]),
        )
    };
}
pub(crate) use raw_syscall;

/// One argument as a register's worth (see [`Word`]).
#[inline(always)]
pub fn w<T: Word>(x: T) -> usize {
    x.word()
}

/// Up to six arguments, the unused ones 0.
#[inline(always)]
pub fn six<const N: usize>(given: [usize; N]) -> [usize; 6] {
    let mut all = [0; 6];
    all[..N].copy_from_slice(&given);
    all
}

/// A system call of three arguments (the commonest: read, write, their vector forms,
/// connect, accept, recvmsg, sendmsg, poll): no other register is set.
///
/// # Safety
/// The system call's own contract: every pointer argument valid for what it does with it.
#[inline(always)]
pub unsafe fn call3(nr: c_long, a: usize, b: usize, c: usize) -> isize {
    #[cfg(target_arch = "x86_64")]
    {
        let ret: isize;
        // SAFETY: the kernel reads the arguments as the caller's contract allows and writes
        // only rax (the result), rcx and r11 (return address and flags, declared clobbered);
        // it touches no stack of ours.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") nr as isize => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack, preserves_flags)
            )
        };
        ret
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: the caller's contract.
        unsafe { call6(nr, [a, b, c, 0, 0, 0]) }
    }
}

/// A system call of up to six arguments (unused ones 0).
///
/// # Safety
/// The system call's own contract: every pointer argument valid for what it does with it.
#[inline(always)]
pub unsafe fn call6(nr: c_long, [a, b, c, d, e, f]: [usize; 6]) -> isize {
    #[cfg(target_arch = "x86_64")]
    {
        let ret: isize;
        // SAFETY: as in `call3`; r10, r8 and r9 carry the 4th to 6th arguments.
        unsafe {
            core::arch::asm!(
                "syscall",
                inlateout("rax") nr as isize => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                in("r10") d,
                in("r8") e,
                in("r9") f,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack, preserves_flags)
            )
        };
        ret
    }
    #[cfg(target_arch = "aarch64")]
    {
        let ret: isize;
        // SAFETY: `svc 0` with the number in x8 and the arguments in x0..x5; the kernel
        // writes only x0 (the result) and touches no stack of ours.
        unsafe {
            core::arch::asm!(
                "svc 0",
                in("x8") nr,
                inlateout("x0") a as isize => ret,
                in("x1") b,
                in("x2") c,
                in("x3") d,
                in("x4") e,
                in("x5") f,
                options(nostack, preserves_flags)
            )
        };
        ret
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        // Never reached: `AVAILABLE` is false, so `route` never chooses the direct way.
        let _ = (nr, a, b, c, d, e, f);
        -(libc::ENOSYS as isize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::errno::{errno, set_errno};

    #[test]
    fn errors_become_minus_one_and_errno() {
        set_errno(0);
        assert_eq!(result::<ssize_t>(-(libc::EAGAIN as isize)), -1);
        assert_eq!(errno(), libc::EAGAIN);
        assert_eq!(result::<c_int>(-4095), -1);
        assert_eq!(errno(), 4095);
        set_errno(0);
        // Not errors: any other value, however large (a huge read count; -4096 never
        // comes back from the kernel but is on glibc's side of the line too).
        assert_eq!(result::<ssize_t>(7), 7);
        assert_eq!(result::<ssize_t>(0), 0);
        assert_eq!(result::<ssize_t>(isize::MAX), isize::MAX);
        assert_eq!(result::<ssize_t>(-4096), -4096);
        assert_eq!(errno(), 0);
    }

    #[test]
    fn arguments_are_extended_as_glibc_passes_them() {
        assert_eq!((-1 as c_int).word(), usize::MAX);
        assert_eq!(u32::MAX.word(), u32::MAX as usize);
        assert_eq!(std::ptr::null::<u8>().word(), 0);
    }

    /// The instruction against the kernel: a pipe written and read, then the errors the
    /// hooks must reproduce (EBADF, EAGAIN), each as glibc reports them.
    #[test]
    fn the_instruction_reaches_the_kernel() {
        let mut p = [0 as c_int; 2];
        // SAFETY: writes two descriptors into `p`.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK) }, 0);
        let nr = |n: Option<c_long>| n.unwrap();
        let byte = [42u8];
        let mut back = [0u8; 4];
        // SAFETY: valid descriptors and buffers of the lengths given.
        unsafe {
            let w: ssize_t = result(raw_syscall!(nr(nr::write); p[1], byte.as_ptr(), 1usize));
            assert_eq!(w, 1);
            let r: ssize_t = result(raw_syscall!(nr(nr::read); p[0], back.as_mut_ptr(), 4usize));
            assert_eq!((r, back[0]), (1, 42));
            let again: ssize_t =
                result(raw_syscall!(nr(nr::read); p[0], back.as_mut_ptr(), 4usize));
            assert_eq!((again, errno()), (-1, libc::EAGAIN));
            let bad: ssize_t = result(
                raw_syscall!(nr(nr::recvfrom); p[0], back.as_mut_ptr(), 4usize, 0, 0usize, 0usize),
            );
            assert_eq!((bad, errno()), (-1, libc::ENOTSOCK));
            let c: c_int = result(raw_syscall!(nr(nr::close); p[0]));
            let c2: c_int = result(raw_syscall!(nr(nr::close); p[1]));
            assert_eq!((c, c2), (0, 0));
            let gone: c_int = result(raw_syscall!(nr(nr::close); p[1]));
            assert_eq!((gone, errno()), (-1, libc::EBADF));
        }
    }
}
