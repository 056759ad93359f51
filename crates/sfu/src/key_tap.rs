//! The SRTP keys of each connection, for the SFU's own forwarding path: a DTLS provider
//! that wraps str0m's and hands a copy of the DTLS-SRTP keying material (RFC 5764 §4.2) to
//! the connection it belongs to. str0m keeps its keys to itself; its crypto provider is the
//! public seam where they pass by. A connection built inside [`tapped`] gets a [`KeySlot`]
//! that is filled once its handshake is done.

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use str0m::config::{CryptoProvider, DtlsCert};
use str0m::crypto::CryptoError;
use str0m::crypto::dtls::{
    DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, ProtocolVersion,
};

use crate::srtp_tx::Keys;

/// Where a connection's keys arrive.
#[derive(Debug, Default)]
pub(crate) struct KeySlot(OnceLock<Keys>);

impl KeySlot {
    /// The keys, once the DTLS handshake has produced them.
    pub fn get(&self) -> Option<&Keys> {
        self.0.get()
    }
}

thread_local! {
    /// The slot for the next DTLS instance created on this thread.
    static NEXT: RefCell<Option<Arc<KeySlot>>> = const { RefCell::new(None) };
}

/// Run `build` (which creates one str0m `Rtc` with a provider from [`provider`]) and return
/// what it built with the slot its connection's keys will arrive in.
pub(crate) fn tapped<T>(build: impl FnOnce() -> T) -> (T, Arc<KeySlot>) {
    let slot = Arc::new(KeySlot::default());
    NEXT.with(|n| *n.borrow_mut() = Some(slot.clone()));
    let built = build();
    NEXT.with(|n| n.borrow_mut().take());
    (built, slot)
}

/// `crypto` with its DTLS provider wrapped so that connections made in [`tapped`] report
/// their keys.
pub(crate) fn provider(crypto: CryptoProvider) -> CryptoProvider {
    static TAPS: OnceLock<Tap> = OnceLock::new();
    let inner = crypto.dtls_provider;
    let tap: &'static Tap = TAPS.get_or_init(|| Tap { inner });
    CryptoProvider {
        dtls_provider: tap,
        ..crypto
    }
}

#[derive(Debug)]
struct Tap {
    inner: &'static dyn DtlsProvider,
}

impl DtlsProvider for Tap {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        self.inner.generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let inner = self.inner.new_dtls(cert, now, dtls_version, mtu)?;
        Ok(match NEXT.with(|n| n.borrow_mut().take()) {
            Some(slot) => Box::new(Tapped { inner, slot }),
            None => inner,
        })
    }

    fn is_test(&self) -> bool {
        self.inner.is_test()
    }
}

/// A DTLS instance that copies its keying material into its connection's slot.
#[derive(Debug)]
struct Tapped {
    inner: Box<dyn DtlsInstance>,
    slot: Arc<KeySlot>,
}

impl DtlsInstance for Tapped {
    fn set_active(&mut self, active: bool) {
        self.inner.set_active(active)
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.inner.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let out = self.inner.poll_output(buf);
        if let DtlsOutput::KeyingMaterial(km, profile) = &out {
            let _ = self.slot.0.set(Keys {
                profile: *profile,
                material: km.to_vec(),
                active: self.inner.is_active(),
            });
        }
        out
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.inner.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.inner.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.inner.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.inner.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.inner.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.inner.close()
    }
}
