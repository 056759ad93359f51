//! End-to-end: POST /api/v1/room/{token} from Nextcloud: authentication, every request type, status codes.
