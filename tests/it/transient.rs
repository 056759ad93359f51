//! End-to-end: transient room data and sd: session data.
