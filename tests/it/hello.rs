//! End-to-end: hello v1 (tickets), v2 (JWT with every key type), internal clients and every hello refusal.
