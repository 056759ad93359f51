//! End-to-end: message and control relay to session, user, room and call recipients.
