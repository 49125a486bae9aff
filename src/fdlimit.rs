//! The process's open-file limit.
//!
//! Every client socket is a file descriptor, and the usual soft limit (1,024)
//! is far below what the relay (or the load generator driving it) holds. The
//! hard limit is the most an unprivileged process may ask for, so both raise
//! the soft limit to it once at start and compare the result with what they
//! need. One function, shared, so the relay and its load tool cannot drift
//! apart on how that is done.

use std::io;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft
/// limit in force afterwards (unchanged if the raise was refused, which
/// callers see as a number short of their needs). Fails only when the limit
/// cannot be read.
pub fn raise_to_hard_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` into `lim`, which we own and
    // which outlives the call; no other memory is touched.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let wanted = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the `rlimit` behind the pointer, which
        // we own and which outlives the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    // `rlim_t` is `u64` on Linux, the relay's target.
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> libc::rlimit {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in `raise_to_hard_limit`: writes into `lim` only.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        lim
    }

    #[test]
    fn raises_the_soft_limit_to_the_hard_one_and_reports_it() {
        let soft = raise_to_hard_limit().unwrap();
        let now = current();
        assert_eq!(soft, now.rlim_cur, "reports the limit in force");
        // Raising the soft limit up to the hard one never needs privileges.
        assert_eq!(now.rlim_cur, now.rlim_max);
        assert_eq!(raise_to_hard_limit().unwrap(), soft, "idempotent");
    }
}
