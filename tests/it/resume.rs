//! End-to-end: resume within the window, takeover of the old connection, failed resume followed by a fresh hello, bye.
