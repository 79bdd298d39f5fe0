//! The table of interposed functions: one row per libc (or OpenSSL) function the shim
//! replaces.
//!
//! A row is `Family fn name(C signature) -> ret = shape(..) [sys(..)] { hook body };`. The table is a
//! macro that hands every row to a callback, so this list is written once and expanded three
//! times:
//! * `abi::real` makes the real-function entry of each row (eager `dlsym(RTLD_NEXT)`,
//!   `#[cold]` first use, self-resolution check);
//!   with a `sys(NR: args; if condition)` column (glibc's cancellable wrappers), the real
//!   function makes system call `NR` (`abi::syscall::nr`) itself with those arguments, as
//!   glibc's wrapper does, when `abi::route` says no thread of the program's can cancel (and
//!   the condition holds: a `_chk` row's size check, else glibc's wrapper fails it);
//! * `hooks` makes the exported symbol of each row, from its shape:
//!   - `fd(FD, SLOT) { .. }`: on an fd that is not a tracked connection, a tail call to the
//!     real function (one load and a branch); on a tracked one, the body, out of line, with
//!     the connection's slot bound to `SLOT`;
//!   - `call() { .. }`: the body is the whole hook (it makes the real call itself);
//!   - `tls(VIA) { .. }`: the export is a trampoline that hands the caller's return address to
//!     the body, with `VIA` bound to the real function for that caller (`abi::caller`: the
//!     caller's own OpenSSL, not a global guess); the body calls it through `real::NAME::at`;
//! * `crates/stallguard-inventory` lists the names and families (`stallguard check`, and the
//!   tests comparing the built library, the README and the man page with this table).
//!
//! Bodies run inside the hook's `unsafe` context with the C arguments by name; they call the
//! real function exactly once, through `real::NAME`, and everything else through `track`
//! (safe functions) and `args` (readers of the C arguments). Paths are relative: the names
//! `real`, `args`, `track`, `table` are those in scope in `hooks`.

/// Hands every row to `$callback!`.
macro_rules! interposed {
    ($callback:ident) => {
        $callback! {
            // ---- accept: start tracking connections ----
            Accept fn accept(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> c_int
                = call() sys(accept: fd, addr, len) { args::accepting(addr, len, |a, l| real::accept(fd, a, l), |conn, peer| track::admission::admitted(fd, conn, peer)) };
            Accept fn accept4(fd: c_int, addr: *mut sockaddr, len: *mut socklen_t, flags: c_int) -> c_int
                = call() sys(accept4: fd, addr, len, flags) { args::accepting(addr, len, |a, l| real::accept4(fd, a, l, flags), |conn, peer| track::admission::admitted(fd, conn, peer)) };
            Accept fn listen(fd: c_int, backlog: c_int) -> c_int
                = call() { track::admission::listened(real::listen(fd, backlog), fd) };
            Connect fn connect(fd: c_int, addr: *const sockaddr, len: socklen_t) -> c_int
                = call() sys(connect: fd, addr, len) {
                    if !track::connect::enabled() {
                        return real::connect(fd, addr, len);
                    }
                    track::connect::connecting(fd, args::destination(addr, len), || real::connect(fd, addr, len))
                };

            // ---- read: the server waits on the client ----
            Read fn read(fd: c_int, buf: *mut c_void, n: size_t) -> ssize_t
                = fd(fd, slot) sys(read: fd, buf, n) { track::io::reading(slot, fd, 0, args::ReadBuf::Flat(buf.cast()), || real::read(fd, buf, n)) };
            Read fn readv(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t
                = fd(fd, slot) sys(readv: fd, iov, cnt) { track::io::reading(slot, fd, 0, args::ReadBuf::Iov(iov, cnt), || real::readv(fd, iov, cnt)) };
            Read fn recv(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int) -> ssize_t
                = fd(fd, slot) sys(recvfrom: fd, buf, n, flags, 0usize, 0usize) { track::io::reading(slot, fd, flags, args::ReadBuf::Flat(buf.cast()), || real::recv(fd, buf, n, flags)) };
            Read fn recvfrom(fd: c_int, buf: *mut c_void, n: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t
                = fd(fd, slot) sys(recvfrom: fd, buf, n, flags, addr, len) { track::io::reading(slot, fd, flags, args::ReadBuf::Flat(buf.cast()), || real::recvfrom(fd, buf, n, flags, addr, len)) };
            Read fn recvmsg(fd: c_int, msg: *mut msghdr, flags: c_int) -> ssize_t
                = fd(fd, slot) sys(recvmsg: fd, msg, flags) { track::io::reading(slot, fd, flags, args::ReadBuf::Msg(msg), || real::recvmsg(fd, msg, flags)) };
            Read fn __read_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t) -> ssize_t
                = fd(fd, slot) sys(read: fd, buf, n; if n <= buflen) { track::io::reading(slot, fd, 0, args::ReadBuf::Flat(buf.cast()), || real::__read_chk(fd, buf, n, buflen)) };
            Read fn __recv_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int) -> ssize_t
                = fd(fd, slot) sys(recvfrom: fd, buf, n, flags, 0usize, 0usize; if n <= buflen) { track::io::reading(slot, fd, flags, args::ReadBuf::Flat(buf.cast()), || real::__recv_chk(fd, buf, n, buflen, flags)) };
            Read fn __recvfrom_chk(fd: c_int, buf: *mut c_void, n: size_t, buflen: size_t, flags: c_int, addr: *mut sockaddr, len: *mut socklen_t) -> ssize_t
                = fd(fd, slot) sys(recvfrom: fd, buf, n, flags, addr, len; if n <= buflen) { track::io::reading(slot, fd, flags, args::ReadBuf::Flat(buf.cast()), || real::__recvfrom_chk(fd, buf, n, buflen, flags, addr, len)) };

            // ---- write: with MSG_NOSIGNAL on a tracked socket (see track::io) ----
            Write fn write(fd: c_int, buf: *const c_void, n: size_t) -> ssize_t
                = fd(fd, slot) sys(write: fd, buf, n) {
                    track::io::writing_plain(slot, n, || real::send(fd, buf, n, libc::MSG_NOSIGNAL), || real::write(fd, buf, n))
                };
            Write fn writev(fd: c_int, iov: *const iovec, cnt: c_int) -> ssize_t
                = fd(fd, slot) sys(writev: fd, iov, cnt) {
                    let msg = args::msghdr_of(iov, cnt);
                    track::io::writing_plain(slot, args::iov_len(iov, cnt), || real::sendmsg(fd, &msg, libc::MSG_NOSIGNAL), || real::writev(fd, iov, cnt))
                };
            Write fn send(fd: c_int, buf: *const c_void, n: size_t, flags: c_int) -> ssize_t
                = fd(fd, slot) sys(sendto: fd, buf, n, flags, 0usize, 0u32) { track::io::sending(slot, n, flags, |flags| real::send(fd, buf, n, flags)) };
            Write fn sendto(fd: c_int, buf: *const c_void, n: size_t, flags: c_int, addr: *const sockaddr, len: socklen_t) -> ssize_t
                = fd(fd, slot) sys(sendto: fd, buf, n, flags, addr, len) { track::io::sending(slot, n, flags, |flags| real::sendto(fd, buf, n, flags, addr, len)) };
            Write fn sendmsg(fd: c_int, msg: *const msghdr, flags: c_int) -> ssize_t
                = fd(fd, slot) sys(sendmsg: fd, msg, flags) { track::io::sending(slot, args::msg_len(msg), flags, |flags| real::sendmsg(fd, msg, flags)) };
            Write fn sendfile(out: c_int, inp: c_int, off: *mut off_t, n: size_t) -> ssize_t
                = fd(out, slot) { track::io::without_our_sigpipe(slot, n, || real::sendfile(out, inp, off, n)) };
            Write fn sendfile64(out: c_int, inp: c_int, off: *mut i64, n: size_t) -> ssize_t
                = fd(out, slot) { track::io::without_our_sigpipe(slot, n, || real::sendfile64(out, inp, off, n)) };

            // ---- OpenSSL, where the program loads libssl: a TLS connection's plaintext (see track::tls) ----
            Tls fn SSL_read(ssl: *mut c_void, buf: *mut c_void, num: c_int) -> c_int
                = tls(via) { let r = real::SSL_read::at(via, ssl, buf, num); track::tls::read(via, ssl, buf.cast(), args::tls_count(r)); r };
            Tls fn SSL_read_ex(ssl: *mut c_void, buf: *mut c_void, num: size_t, got: *mut size_t) -> c_int
                = tls(via) { let r = real::SSL_read_ex::at(via, ssl, buf, num, got); track::tls::read(via, ssl, buf.cast(), args::tls_count_ex(r, got)); r };
            Tls fn SSL_peek(ssl: *mut c_void, buf: *mut c_void, num: c_int) -> c_int
                = tls(via) { let r = real::SSL_peek::at(via, ssl, buf, num); track::tls::peeked(via, ssl, args::tls_count(r)); r };
            Tls fn SSL_peek_ex(ssl: *mut c_void, buf: *mut c_void, num: size_t, got: *mut size_t) -> c_int
                = tls(via) { let r = real::SSL_peek_ex::at(via, ssl, buf, num, got); track::tls::peeked(via, ssl, args::tls_count_ex(r, got)); r };
            Tls fn SSL_write(ssl: *mut c_void, buf: *const c_void, num: c_int) -> c_int
                = tls(via) { let r = real::SSL_write::at(via, ssl, buf, num); track::tls::wrote(via, ssl, args::tls_count(r)); r };
            Tls fn SSL_write_ex(ssl: *mut c_void, buf: *const c_void, num: size_t, put: *mut size_t) -> c_int
                = tls(via) { let r = real::SSL_write_ex::at(via, ssl, buf, num, put); track::tls::wrote(via, ssl, args::tls_count_ex(r, put)); r };

            // ---- close: every path that ends or copies an fd (see track::alias) ----
            Close fn close(fd: c_int) -> c_int
                = call() sys(close: fd) { track::alias::forget(fd); real::close(fd) };
            Close fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int
                = call() { track::alias::closing_range(first, last, flags); track::split::closed_range(flags, real::close_range(first, last, flags)) };
            Close fn unshare(flags: c_int) -> c_int
                = call() { track::split::unshared(flags, real::unshare(flags)) };
            Close fn closefrom(low: c_int) -> ()
                = call() { track::alias::closing_range(low.max(0) as c_uint, c_uint::MAX, 0); real::closefrom(low) };
            Close fn fclose(stream: *mut FILE) -> c_int
                = call() { track::alias::forget_stream(args::fileno(stream)); real::fclose(stream) };
            Close fn dup(old: c_int) -> c_int
                = call() { track::alias::copied(old, real::dup(old)) };
            Close fn dup2(old: c_int, new: c_int) -> c_int
                = call() { track::alias::replacing(old, new, || real::dup2(old, new)) };
            Close fn dup3(old: c_int, new: c_int, flags: c_int) -> c_int
                = call() { track::alias::replacing(old, new, || real::dup3(old, new, flags)) };
            Close fn fcntl(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int
                = call() { track::alias::fcntl_done(fd, cmd, real::fcntl(fd, cmd, arg)) };
            Close fn fcntl64(fd: c_int, cmd: c_int, arg: c_ulong) -> c_int
                = call() { track::alias::fcntl_done(fd, cmd, real::fcntl64(fd, cmd, arg)) };
            Close fn shutdown(fd: c_int, how: c_int) -> c_int
                = fd(fd, slot) { track::io::shutting_down(slot, how); real::shutdown(fd, how) };
            Close fn dlclose(handle: *mut c_void) -> c_int
                = call() { let r = real::dlclose(handle); track::tls::unloaded(); r };

            // ---- threads: once the program asks for a cancel, glibc's wrappers again (see
            // abi::route; threads themselves are counted by glibc, not hooked) ----
            Thread fn pthread_cancel(t: pthread_t) -> c_int
                = call() { route::cancel_requested(); real::pthread_cancel(t) };

            // ---- poll: a tracked fd in a read set means the server waits on the client ----
            Poll fn poll(fds: *mut pollfd, n: nfds_t, timeout: c_int) -> c_int
                = call() sys(poll: fds, n, timeout) { track::wait::polling(args::pollfds(fds, n)); real::poll(fds, n, timeout) };
            Poll fn __poll_chk(fds: *mut pollfd, n: nfds_t, timeout: c_int, fdslen: size_t) -> c_int
                = call() sys(poll: fds, n, timeout; if (n as usize) <= fdslen / std::mem::size_of::<pollfd>()) { track::wait::polling(args::pollfds(fds, n)); real::__poll_chk(fds, n, timeout, fdslen) };
            Poll fn ppoll(fds: *mut pollfd, n: nfds_t, ts: *const timespec, mask: *const sigset_t) -> c_int
                = call() { track::wait::polling(args::pollfds(fds, n)); real::ppoll(fds, n, ts, mask) };
            Poll fn select(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, tv: *mut timeval) -> c_int
                = call() { track::wait::selecting(|each| args::each_in_set(n, r, each)); real::select(n, r, w, e, tv) };
            Poll fn pselect(n: c_int, r: *mut fd_set, w: *mut fd_set, e: *mut fd_set, ts: *const timespec, mask: *const sigset_t) -> c_int
                = call() { track::wait::selecting(|each| args::each_in_set(n, r, each)); real::pselect(n, r, w, e, ts, mask) };
            Poll fn epoll_ctl(epfd: c_int, op: c_int, fd: c_int, ev: *mut epoll_event) -> c_int
                = call() {
                    let r = real::epoll_ctl(epfd, op, fd, ev);
                    if r == 0 {
                        track::wait::epoll_changed(fd, op, || args::epoll_events(ev));
                    }
                    r
                };
        }
    };
}
