//! The only place that talks to libc and the kernel directly: the real functions behind the
//! hooks (`real`; for the cancellable ones, in a process where no thread of the program's can
//! cancel another, the system call itself: `route` decides, `syscall` makes it), errno (`errno`), socket options and socket facts (`socket`), and the few
//! other system calls the shim makes (`sys`), and the two OpenSSL functions it calls
//! (`openssl`; `caller` finds the real function for the object that called, `loaded` a
//! library the program loaded privately, `objects` which object an address lies in). Everything above this folder is safe Rust over
//! these functions, except the hooks' C arguments (raw pointers the program passed us).

pub mod args;
pub mod caller;
pub mod errno;
mod loaded;
mod objects;
pub mod openssl;
pub mod real;
pub mod route;
pub mod socket;
pub mod sys;
pub mod syscall;
