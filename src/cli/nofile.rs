//! The open-file limit: every connection, listener and stream socket of the node holds a file
//! descriptor, and a relay holding 10,000 reservations needs more than the usual soft limit of
//! 1024.

/// The open-file limit before and after [`raise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NofileLimit {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit in force now.
    pub soft: u64,
    /// The hard limit (set by the service manager: systemd's `LimitNOFILE=`, `ulimit -Hn`).
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (Unix; elsewhere reports nothing changed).
pub fn raise() -> std::io::Result<NofileLimit> {
    #[cfg(unix)]
    {
        // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
        // `rlim_t` is u64 on Linux, not on every Unix: the casts are needed elsewhere.
        #[allow(clippy::unnecessary_cast)]
        unsafe {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let before = limit.rlim_cur as u64;
            let hard = limit.rlim_max as u64;
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(NofileLimit {
                before,
                soft: hard,
                hard,
            })
        }
    }
    #[cfg(not(unix))]
    Ok(NofileLimit {
        before: 0,
        soft: 0,
        hard: 0,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_limit() {
        let limit = super::raise().expect("getrlimit works");
        assert_eq!(limit.soft, limit.hard);
        assert!(limit.soft >= limit.before);
    }
}
