//! Outgoing signed callbacks: Fetch Hive `callback_url` deliveries and Knouds
//! webhooks, retried with a short backoff and recorded attempt by attempt.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::clock::unix_now;
use crate::recording::{BoundedLog, DeliveredCallback, Dialect};

/// Retries after a failed first attempt (so at most 4 attempts).
const MAX_RETRIES: u32 = 3;
/// Backoff before the first retry; doubled for each further one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Per-attempt timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a callback body is signed.
#[derive(Clone, Debug)]
pub(crate) enum CallbackSignature {
    /// `X-Fetch-Hive-Signature: <hex HMAC-SHA256(secret, body)>`.
    FetchHive { secret: String },
    /// `X-Knouds-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`.
    Knouds { secret: String },
}

/// Lowercase hex HMAC-SHA256 of the concatenated `parts`.
pub(crate) fn hmac_sha256_hex(secret: &[u8], parts: &[&[u8]]) -> String {
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            for part in parts {
                mac.update(part);
            }
            hex::encode(mac.finalize().into_bytes())
        }
        // HMAC accepts keys of any length; this arm is unreachable in practice.
        Err(_) => String::new(),
    }
}

impl CallbackSignature {
    fn header(&self, body: &[u8]) -> (String, String) {
        match self {
            CallbackSignature::FetchHive { secret } => (
                "x-fetch-hive-signature".to_owned(),
                hmac_sha256_hex(secret.as_bytes(), &[body]),
            ),
            CallbackSignature::Knouds { secret } => {
                let t = unix_now().to_string();
                let v1 = hmac_sha256_hex(secret.as_bytes(), &[t.as_bytes(), b".", body]);
                ("x-knouds-signature".to_owned(), format!("t={t},v1={v1}"))
            }
        }
    }
}

/// Sends callbacks with one shared HTTP client and records every attempt.
#[derive(Debug)]
pub(crate) struct CallbackSender {
    client: reqwest::Client,
    log: BoundedLog<DeliveredCallback>,
}

impl CallbackSender {
    pub(crate) fn new() -> std::io::Result<Self> {
        // reqwest is built without a default rustls provider; install ring's
        // (a no-op when the process already chose one).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent("flowgate-emulator")
            .build()
            .map_err(std::io::Error::other)?;
        Ok(Self {
            client,
            log: BoundedLog::new(),
        })
    }

    pub(crate) fn delivered(&self) -> Vec<DeliveredCallback> {
        self.log.snapshot()
    }

    pub(crate) fn clear(&self) {
        self.log.clear();
    }

    /// POSTs `body` to `url`, retrying failures (transport errors and non-2xx).
    pub(crate) async fn deliver(
        &self,
        dialect: Dialect,
        url: &str,
        signature: &CallbackSignature,
        body: Bytes,
    ) {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=MAX_RETRIES + 1 {
            let headers = vec![
                ("content-type".to_owned(), "application/json".to_owned()),
                signature.header(&body),
            ];
            let mut request = self.client.post(url).body(body.clone());
            for (name, value) in &headers {
                request = request.header(name.as_str(), value.as_str());
            }
            let (status, error) = match request.send().await {
                Ok(response) => (Some(response.status().as_u16()), None),
                Err(err) => (None, Some(err.to_string())),
            };
            let record = DeliveredCallback {
                dialect,
                url: url.to_owned(),
                headers,
                body: body.clone(),
                attempt,
                status,
                error,
            };
            let ok = record.delivered();
            tracing::debug!(?dialect, url, attempt, status, "emulator callback attempt");
            self.log.push(record);
            if ok {
                return;
            }
            if attempt <= MAX_RETRIES {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
    }
}
