//! End-to-end: hello and anonymous-join timeouts, message size cap, rate limit, brute-force blocking, origin check, session limits.
