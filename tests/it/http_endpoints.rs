//! End-to-end: welcome, stats, serverinfo and TURN credentials endpoints.
