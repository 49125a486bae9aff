//! RFC 6238 time-based one-time passwords, as DhanHQ expects them.
