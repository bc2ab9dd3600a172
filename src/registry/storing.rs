//! The storing side: kad's record filtering. Relay records (keys `<namespace>/record/…`) are
//! stored only if signed by the key's relay, unexpired, within the allowed lifetime and not
//! older than the record already held; provider records are kept as
//! [`ProviderBook`](super::provider_book::ProviderBook) decides (shard membership, slots shared
//! between network origins, room kept for the node's own); other records are stored as an
//! unfiltered kad would, or handed to the application.

use std::time::{Duration, Instant, SystemTime};

use libp2p::kad::{store::RecordStore, InboundRequest, Record};

use super::{
    behaviour::Behaviour,
    event::{Event, RejectedAt},
    record::unix_ms,
    shard::{is_record_key, peer_of_record_key},
    verify::{admit_for_storage, Expectation, RecordError},
    OtherRecords,
};

impl Behaviour {
    pub(super) fn on_inbound_request(&mut self, request: InboundRequest) {
        match request {
            InboundRequest::PutRecord {
                source,
                record: Some(record),
                ..
            } if is_record_key(&self.config.namespace, &record.key) => {
                match self.admit_relay_record(&record) {
                    Ok(expires) => {
                        let mut record = record;
                        record.expires = Some(record.expires.map_or(expires, |e| e.min(expires)));
                        if let Err(e) = self.inner.kad.store_mut().put(record) {
                            tracing::debug!("relay record not stored: {e}");
                        }
                    }
                    Err(error) => {
                        tracing::info!(%source, %error, "relay record refused for storage");
                        self.emit(Event::RecordRejected {
                            at: RejectedAt::Storing,
                            from: source,
                            error,
                        });
                    }
                }
            }
            InboundRequest::PutRecord {
                record: Some(record),
                ..
            } if self.config.other_records == OtherRecords::Store => {
                if let Err(e) = self.inner.kad.store_mut().put(record) {
                    tracing::debug!("record not stored: {e}");
                }
            }
            InboundRequest::AddProvider {
                record: Some(provider),
            } => {
                // kad already checked that the provider is the peer that sent it.
                let (key, from) = (provider.key.clone(), provider.provider);
                let store = self.inner.kad.store_mut();
                if let Err(reason) = self
                    .providers
                    .add(store, provider, self.local, Instant::now())
                {
                    tracing::debug!(%from, ?key, %reason, "provider record not stored");
                }
            }
            other => self.emit(Event::Kad(Box::new(libp2p::kad::Event::InboundRequest {
                request: other,
            }))),
        }
    }

    /// Checks a relay record for storage; returns when it expires.
    fn admit_relay_record(&mut self, record: &Record) -> Result<Instant, RecordError> {
        let namespace = self.config.namespace.clone();
        let key_peer = peer_of_record_key(&namespace, &record.key).ok_or(RecordError::Open(
            super::record::OpenError::Payload("record key"),
        ))?;
        let now_ms = unix_ms(SystemTime::now());
        let expect = Expectation {
            namespace: &namespace,
            peer: Some(key_peer),
            now_ms,
            max_skew: self.config.max_clock_skew,
        };
        let stored = self
            .inner
            .kad
            .store_mut()
            .get(&record.key)
            .map(|r| r.value.clone());
        let admitted = admit_for_storage(&record.value, key_peer, stored.as_deref(), &expect)?;
        let left = Duration::from_millis(admitted.expires_at_ms.saturating_sub(now_ms));
        Ok(Instant::now() + left)
    }
}
