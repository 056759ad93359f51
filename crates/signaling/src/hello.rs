//! The hello handshake (reference §1.4): v1 tickets checked with Nextcloud, v2 JWTs
//! checked against the key in Talk's capabilities, internal clients by HMAC, federated
//! clients, and resume of a session within the resume window.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use hpb_proto::backend::{AuthRequest, VERSION};
use hpb_proto::client::{Hello, HelloKind, HelloVersion, InternalAuth, TokenParams};
use hpb_proto::server::{self, HelloReply, ServerInfo};
use hpb_proto::{ErrorCode, checksum};
use serde_json::value::RawValue;
use url::Url;

use crate::backends::Backend;
use crate::hub::{Hub, unix_now};
use crate::rooms::{Refusal, explain_backend_error};
use crate::session::{ClientKind, Delivery, NewSession, Session};
use crate::throttle::Action;
use crate::ws::Conn;

/// Who a successful authentication says the client is.
struct Identity {
    kind: ClientKind,
    backend: Arc<Backend>,
    backend_url: Url,
    user_id: String,
    user_data: Option<Box<RawValue>>,
    actor: Option<(String, String)>,
}

fn backend_refusal(e: crate::backends::LookupError) -> Refusal {
    Refusal::new(ErrorCode::InvalidBackend, e.to_string())
}

impl Hub {
    /// Handle a hello on a connection without a session. Returns the new session.
    pub async fn handle_hello(
        self: &Arc<Self>,
        conn: &Conn,
        id: Option<&str>,
        hello: Hello,
    ) -> Option<Arc<Session>> {
        let result = match hello.kind {
            HelloKind::Resume { resume_id } => {
                return self.resume(conn, id, hello.version, &resume_id).await;
            }
            HelloKind::Client { url, params } => match hello.version {
                HelloVersion::V1 => self.auth_v1(&url, &params).await,
                HelloVersion::V2 => self.auth_v2(&url, &params, ClientKind::Client).await,
            },
            HelloKind::Federation { url, params } => match hello.version {
                HelloVersion::V1 => self.auth_v1(&url, &params).await,
                HelloVersion::V2 => self.auth_federation(&url, &params).await,
            },
            HelloKind::Internal(p) => self.auth_internal(conn, &p).await,
        };
        let ident = match result {
            Ok(i) => i,
            Err(r) => {
                tracing::warn!(remote = %conn.ip, code = %r.code, reason = %r.message, "hello refused");
                conn.error(id, r.code, &r.message, r.details.as_deref());
                return None;
            }
        };
        let counted = matches!(ident.kind, ClientKind::Client | ClientKind::Federation);
        if counted && !ident.backend.try_add_session() {
            let setting = if ident.backend.compat {
                "[backend] sessionlimit".to_string()
            } else {
                format!(
                    "[backends.{0}] sessionlimit, server.conf: [{0}] sessionlimit",
                    ident.backend.id
                )
            };
            let msg = format!(
                "backend {} already has its limit of {} sessions ({setting}); raise it or wait for sessions to end",
                ident.backend.label(),
                ident.backend.session_limit
            );
            tracing::warn!(remote = %conn.ip, backend = %ident.backend.id, "session limit exceeded");
            conn.error(id, ErrorCode::SessionLimitExceeded, &msg, None);
            return None;
        }
        let (sid, public_id, private_id) = self.new_ids(&ident.backend.id);
        let in_call = if ident.kind == ClientKind::Internal
            && !hello
                .features
                .iter()
                .any(|f| f == hpb_proto::features::CLIENT_INTERNAL_INCALL)
        {
            3
        } else {
            0
        };
        let session = Arc::new(Session::new(NewSession {
            sid,
            public_id,
            private_id,
            kind: ident.kind,
            backend: ident.backend,
            backend_url: ident.backend_url,
            user_id: ident.user_id,
            user_data: ident.user_data,
            features: hello.features,
            owner: None,
            virtual_id: None,
            actor: ident.actor,
            in_call,
            delivery: Delivery::Connected(conn.outbox.clone()),
            limit: self.cfg.limits.max_queued_messages,
        }));
        self.register(&session);
        self.dialout_hello(&session, conn);
        conn.reply(self.hello_reply(id, &session, hello.version));
        tracing::debug!(session = %session.public_id, backend = %session.backend.id, kind = session.kind.as_str(), "hello");
        Some(session)
    }

    fn hello_reply(&self, id: Option<&str>, s: &Session, version: HelloVersion) -> String {
        let features = if s.kind == ClientKind::Internal {
            &self.internal_features
        } else {
            &self.client_features
        };
        let user = s.user_id();
        server::frame(
            id,
            "hello",
            Some(&HelloReply {
                version: version.as_str(),
                sessionid: &s.public_id,
                resumeid: &s.private_id,
                userid: &user,
                server: ServerInfo {
                    version: hpb_proto::COMPAT_VERSION,
                    features,
                },
            }),
        )
    }

    async fn auth_v1(&self, url: &Url, params: &RawValue) -> Result<Identity, Refusal> {
        let backend = self.backends.lookup(url).map_err(backend_refusal)?;
        let reply = self
            .nextcloud
            .request(
                &backend,
                url,
                "auth",
                &AuthRequest {
                    version: VERSION,
                    params,
                },
            )
            .await
            .map_err(|e| {
                Refusal::new(
                    ErrorCode::InternalError,
                    format!("could not check the hello with Nextcloud: {e}"),
                )
            })?;
        match (reply.kind.as_str(), reply.auth, reply.error) {
            ("auth", Some(a), _) => Ok(Identity {
                kind: ClientKind::Client,
                backend,
                backend_url: url.clone(),
                user_id: a.userid,
                user_data: a.user,
                actor: None,
            }),
            ("error", _, Some(e)) => Err(Refusal {
                code: ErrorCode::from_backend(&e.code).unwrap_or(ErrorCode::AuthFailed),
                message: explain_backend_error(&e.code, &e.message, &backend.label()),
                details: e.details,
            }),
            (other, _, _) => Err(Refusal::new(
                ErrorCode::AuthFailed,
                format!(
                    "Nextcloud answered the authentication with an unexpected reply of type \"{other}\""
                ),
            )),
        }
    }

    async fn verify_token(
        &self,
        url: &Url,
        params: &RawValue,
    ) -> Result<crate::jwt::Claims, Refusal> {
        let p: TokenParams = serde_json::from_str(params.get()).map_err(|e| {
            Refusal::new(
                ErrorCode::InvalidFormat,
                format!("hello v2 params must be {{\"token\": \"<JWT>\"}}: {e}"),
            )
        })?;
        if p.token.is_empty() {
            return Err(Refusal::new(
                ErrorCode::InvalidToken,
                "hello v2 needs \"auth.params.token\"",
            ));
        }
        let fetch_key = || async {
            self.nextcloud
                .capabilities(url)
                .await
                .map(|c| c.hello_v2_token_key.clone())
                .map_err(|e| {
                    Refusal::new(
                        ErrorCode::InvalidToken,
                        format!("could not get the hello-v2 key from Nextcloud: {e}"),
                    )
                })
        };
        let mut key = fetch_key().await?;
        if key.is_none() && self.nextcloud.invalidate_capabilities(url).await {
            key = fetch_key().await?;
        }
        let Some(key) = key else {
            return Err(Refusal::new(
                ErrorCode::InvalidToken,
                format!(
                    "Nextcloud at {url} publishes no hello-v2-token-key in its Talk capabilities"
                ),
            ));
        };
        crate::jwt::verify(&p.token, &key, unix_now()).map_err(|e| Refusal::new(e.code, e.message))
    }

    async fn auth_v2(
        &self,
        url: &Url,
        params: &RawValue,
        kind: ClientKind,
    ) -> Result<Identity, Refusal> {
        let backend = self.backends.lookup(url).map_err(backend_refusal)?;
        let claims = self.verify_token(url, params).await?;
        Ok(Identity {
            kind,
            backend,
            backend_url: url.clone(),
            user_id: claims.sub,
            user_data: claims.userdata,
            actor: None,
        })
    }

    async fn auth_federation(&self, url: &Url, params: &RawValue) -> Result<Identity, Refusal> {
        let backend = self.backends.lookup(url).map_err(backend_refusal)?;
        let caps = self.nextcloud.capabilities(url).await.map_err(|e| {
            Refusal::new(
                ErrorCode::FederationUnsupported,
                format!("could not get Talk's capabilities: {e}"),
            )
        })?;
        if !caps.has("federation-v2") {
            return Err(Refusal::new(
                ErrorCode::FederationUnsupported,
                format!(
                    "Nextcloud at {url} does not support federation (no federation-v2 capability)"
                ),
            ));
        }
        let claims = self.verify_token(url, params).await?;
        let actor = claims.userdata.as_ref().and_then(|u| {
            let v: serde_json::Value = serde_json::from_str(u.get()).ok()?;
            Some((
                v.get("actorId")?.as_str()?.to_string(),
                v.get("actorType")?.as_str()?.to_string(),
            ))
        });
        Ok(Identity {
            kind: ClientKind::Federation,
            backend,
            backend_url: url.clone(),
            user_id: claims.sub,
            user_data: claims.userdata,
            actor,
        })
    }

    async fn auth_internal(&self, conn: &Conn, p: &InternalAuth) -> Result<Identity, Refusal> {
        let Some(secret) = &self.cfg.internal_secret else {
            return Err(Refusal::new(
                ErrorCode::InvalidClientType,
                "internal clients are disabled: set [clients] internalsecret to allow them",
            ));
        };
        if self.throttle.is_blocked(conn.ip, Action::HelloInternal) {
            return Err(Refusal::new(
                ErrorCode::TooManyRequests,
                "too many failed internal hellos from this address; wait before retrying",
            ));
        }
        let expected = checksum::internal_token(secret, &p.random);
        let token_ok = p.random.len() >= checksum::MIN_RANDOM_LEN
            && p.token.len() == expected.len()
            && checksum::verify(secret, &p.random, b"", &p.token);
        if !token_ok {
            let delay = self.throttle.record_failure(conn.ip, Action::HelloInternal);
            tokio::time::sleep(delay).await;
            let why = if p.random.len() < checksum::MIN_RANDOM_LEN {
                format!(
                    "the internal hello random must have at least {} characters",
                    checksum::MIN_RANDOM_LEN
                )
            } else {
                "the internal hello token does not match: the client's internal secret differs from [clients] internalsecret".to_string()
            };
            return Err(Refusal::new(ErrorCode::InvalidToken, why));
        }
        let backend = match hpb_proto::backend_url::canonical(&p.backend) {
            Ok(url) => self
                .backends
                .lookup(&url)
                .map(|b| (b, url))
                .map_err(backend_refusal),
            Err(e) => Err(Refusal::new(
                ErrorCode::InvalidBackend,
                format!("internal hello backend: {e}"),
            )),
        };
        let (backend, url) = match backend {
            Ok(found) => found,
            Err(refusal) => {
                // Like upstream, an unknown backend counts as a failed internal hello.
                let delay = self.throttle.record_failure(conn.ip, Action::HelloInternal);
                tokio::time::sleep(delay).await;
                return Err(refusal);
            }
        };
        Ok(Identity {
            kind: ClientKind::Internal,
            backend,
            backend_url: url,
            user_id: String::new(),
            user_data: None,
            actor: None,
        })
    }

    async fn resume(
        self: &Arc<Self>,
        conn: &Conn,
        id: Option<&str>,
        version: HelloVersion,
        resume_id: &str,
    ) -> Option<Arc<Session>> {
        if self.throttle.is_blocked(conn.ip, Action::HelloResume) {
            conn.error(
                id,
                ErrorCode::TooManyRequests,
                "too many failed resume attempts from this address; wait before retrying",
                None,
            );
            return None;
        }
        let data = match self.codec.decode_private(resume_id) {
            Ok(d) => d,
            Err(e) => {
                self.counters
                    .resume_failed_total
                    .fetch_add(1, Ordering::Relaxed);
                let delay = self.throttle.record_failure(conn.ip, Action::HelloResume);
                tokio::time::sleep(delay).await;
                conn.error(
                    id,
                    ErrorCode::NoSuchSession,
                    &format!("the resume id is not valid ({e}); send a new hello"),
                    None,
                );
                return None;
            }
        };
        let session = self
            .by_sid
            .read()
            .get(&data.sid)
            .filter(|s| *s.private_id == *resume_id)
            .cloned();
        let Some(s) = session.filter(|s| !s.state.lock().closed) else {
            self.counters
                .resume_failed_total
                .fetch_add(1, Ordering::Relaxed);
            conn.error(
                id,
                ErrorCode::NoSuchSession,
                &format!(
                    "the session expired (it is kept {:?} after a disconnect, [limits] resume_window_ms) or is unknown; send a new hello",
                    self.cfg.limits.resume_window
                ),
                None,
            );
            return None;
        };
        let reply = self.hello_reply(id, &s, version);
        let resumed = {
            let mut d = s.delivery.lock();
            if matches!(*d, Delivery::Closed) {
                // The session was closed (expired) between the lookup and now.
                None
            } else {
                let old = std::mem::replace(&mut *d, Delivery::Connected(conn.outbox.clone()));
                let (previous, pending) = match old {
                    Delivery::Connected(o) => {
                        let unsent = o.take_unsent();
                        (Some(o), unsent)
                    }
                    Delivery::Offline { buffer, .. } => (None, buffer),
                    _ => (None, Default::default()),
                };
                let had_participants = pending.iter().any(|f| {
                    f.as_str()
                        .contains(r#""target":"participants","type":"update""#)
                });
                // The reply goes first, then everything that waited for the client, all
                // before the lock is released so frames delivered from now on queue
                // behind them in order.
                conn.outbox
                    .push_all(std::iter::once(reply.into()).chain(pending));
                Some((previous, had_participants))
            }
        };
        let Some((previous, had_participants)) = resumed else {
            conn.error(
                id,
                ErrorCode::NoSuchSession,
                "the session ended while resuming it; send a new hello",
                None,
            );
            return None;
        };
        if let Some(o) = previous {
            let bye = server::frame(
                None,
                "bye",
                Some(&hpb_proto::server::Bye {
                    reason: "session_resumed",
                }),
            );
            o.close_with(
                Some(bye.into()),
                crate::outbox::CloseRequest {
                    code: 1000,
                    reason: "session resumed on another connection".into(),
                },
            );
        }
        if !had_participants && let Some(room) = s.room() {
            self.send_participants_snapshot(&room, &s);
        }
        self.counters.resumes_total.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(session = %s.public_id, "session resumed");
        Some(s)
    }
}
