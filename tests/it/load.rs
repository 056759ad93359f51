//! End-to-end: nothing lost under load; slow clients disconnected with a reason.
