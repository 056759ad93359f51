//! End-to-end: several backends: isolation, per-backend secrets, allowall, several URLs, signaling-v3 and capabilities.
