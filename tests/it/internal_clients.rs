//! End-to-end: internal clients and their virtual sessions.
