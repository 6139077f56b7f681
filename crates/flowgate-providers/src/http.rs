//! The one HTTP client every dialect shares, and the transport-level error
//! mapping (connect failures, timeouts, oversized bodies).
//!
//! Every upstream request gets a client span (`POST`, kind CLIENT) with
//! `http.request.method`, `server.address`, `server.port`, `url.path` (never
//! the query string, never a header), `http.response.status_code`,
//! `flowgate.provider`, `flowgate.dialect`, `flowgate.retry.attempt` and
//! `flowgate.rate_limit.remaining`; its W3C trace context is injected as
//! `traceparent`/`tracestate` headers; and the upstream metrics are
//! recorded (`flowgate.upstream.*`).

use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use flowgate_core::{Deadline, ErrorClass, GatewayError, RateLimitInfo, UpstreamContext};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use tracing::{Instrument as _, field};

use crate::{ProviderSettings, ratelimit};

/// Largest upstream response body accepted.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// How long establishing a TCP/TLS connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

tokio::task_local! {
    /// The attempt number (1 = first) of the call in progress, set by the
    /// retry loop in `guard.rs` and recorded on the client span.
    pub(crate) static ATTEMPT: u32;
}

/// Building the shared client failed (a TLS or system configuration fault).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpClientError(String);

/// A cheap-to-clone handle on one pooled HTTP client.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    /// Builds the client: rustls with the ring provider, HTTP/1.1 and HTTP/2,
    /// pooled connections, a connect timeout. Call once per process.
    pub fn new() -> Result<Self, HttpClientError> {
        // reqwest is built without a bundled crypto provider (to keep aws-lc
        // out of the build); install ring unless someone already installed one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(90))
            .user_agent(concat!("flowgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| HttpClientError(format!("building the HTTP client: {err}")))?;
        Ok(Self { client })
    }
}

impl HttpClient {
    /// The pooled client itself, for other outgoing traffic of the gateway
    /// (callback forwarding) to share its connection pool and TLS setup.
    pub fn reqwest(&self) -> reqwest::Client {
        self.client.clone()
    }
}

/// A complete upstream answer.
#[derive(Debug)]
pub(crate) struct UpstreamResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub rate_limit: RateLimitInfo,
}

impl UpstreamResponse {
    /// An answer received now (parses the rate-limit headers).
    pub fn new(status: u16, headers: HeaderMap, body: Bytes) -> Self {
        let rate_limit = ratelimit::parse(&headers, SystemTime::now());
        Self {
            status,
            headers,
            body,
            rate_limit,
        }
    }

    /// `X-Request-Id`, when the upstream sent one.
    pub fn request_id(&self) -> Option<String> {
        self.headers
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    }
}

/// One prepared upstream request.
#[derive(Debug)]
pub(crate) struct UpstreamRequest<'a> {
    pub method: http::Method,
    pub url: reqwest::Url,
    pub auth: (&'a HeaderName, &'a HeaderValue),
    pub body: Option<Vec<u8>>,
}

/// A provider's base URL, parsed once; request URLs are made by appending
/// path segments (percent-encoded) to a copy, never by re-parsing text.
#[derive(Clone, Debug)]
pub(crate) struct BaseUrl(Result<reqwest::Url, String>);

impl BaseUrl {
    /// Parses `text` (configuration already checked it; a bad one fails
    /// each call with INTERNAL instead of at start-up).
    pub fn parse(text: &str) -> Self {
        Self(reqwest::Url::parse(text).map_err(|err| err.to_string()))
    }

    /// `base/segment/…[?query]`.
    pub fn join(
        &self,
        segments: &[&str],
        query: Option<&str>,
    ) -> Result<reqwest::Url, GatewayError> {
        let mut url = self.0.clone().map_err(|err| {
            GatewayError::internal(format!("the provider's base_url is invalid: {err}"))
        })?;
        url.path_segments_mut()
            .map_err(|()| GatewayError::internal("the provider's base_url cannot take a path"))?
            .pop_if_empty()
            .extend(segments);
        url.set_query(query);
        Ok(url)
    }
}

/// The auth header a dialect sends, built once and marked sensitive so it is
/// never printed by the HTTP stack.
pub(crate) fn auth_header(
    name: HeaderName,
    prefix: &str,
    settings: &ProviderSettings,
) -> (HeaderName, HeaderValue) {
    let value = HeaderValue::from_str(&format!("{prefix}{}", settings.api_key.expose()))
        .map(|mut value| {
            value.set_sensitive(true);
            value
        })
        // A key with bytes invalid in a header is rejected by config
        // validation; an empty value then fails upstream as a 401.
        .unwrap_or_else(|_| HeaderValue::from_static(""));
    (name, value)
}

/// Who is being called, for error context.
pub(crate) fn context(settings: &ProviderSettings, http_status: Option<u16>) -> UpstreamContext {
    UpstreamContext {
        provider: settings.name.clone(),
        kind: settings.kind,
        http_status,
        request_id: None,
    }
}

impl HttpClient {
    /// Sends `request` within the deadline and reads the whole (bounded)
    /// body. Transport failures come back typed; HTTP error statuses do not
    /// (the dialect decodes those).
    pub(crate) async fn send(
        &self,
        settings: &ProviderSettings,
        request: UpstreamRequest<'_>,
        deadline: Deadline,
    ) -> Result<UpstreamResponse, GatewayError> {
        let url = &request.url;
        let method = request.method.as_str();
        let span = tracing::info_span!(
            "upstream.request",
            otel.name = method,
            otel.kind = "client",
            otel.status_code = field::Empty,
            http.request.method = method,
            server.address = url.host_str().unwrap_or_default(),
            server.port = i64::from(url.port_or_known_default().unwrap_or_default()),
            // The path only: queries may carry tokens.
            url.path = url.path(),
            http.response.status_code = field::Empty,
            error.type = field::Empty,
            flowgate.provider = settings.name.as_str(),
            flowgate.dialect = settings.kind.as_str(),
            flowgate.retry.attempt = i64::from(ATTEMPT.try_with(|attempt| *attempt).unwrap_or(1)),
            flowgate.rate_limit.remaining = field::Empty,
        );
        let started = Instant::now();
        let result = self
            .send_in_span(settings, request, deadline, &span)
            .instrument(span.clone())
            .await;
        let status = match &result {
            Ok(response) => Some(response.status),
            Err(error) => error.upstream.as_ref().and_then(|up| up.http_status),
        };
        if let Err(error) = &result {
            span.record("error.type", error.reason.as_str());
        }
        if status.is_none_or(|status| status >= 500) {
            span.record("otel.status_code", "error");
        }
        flowgate_telemetry::metrics().record_upstream(
            &settings.name,
            settings.kind.as_str(),
            status,
            started.elapsed(),
        );
        result
    }

    async fn send_in_span(
        &self,
        settings: &ProviderSettings,
        request: UpstreamRequest<'_>,
        deadline: Deadline,
        span: &tracing::Span,
    ) -> Result<UpstreamResponse, GatewayError> {
        let mut trace_headers = HeaderMap::new();
        flowgate_telemetry::inject(span, &mut trace_headers);
        let budget = deadline.budget(settings.timeout);
        let caller_bound = budget < settings.timeout;
        let mut builder = self
            .client
            .request(request.method, request.url)
            .header(request.auth.0, request.auth.1.clone())
            .header(header::ACCEPT, "application/json")
            .headers(trace_headers)
            .timeout(budget);
        if let Some(body) = request.body {
            builder = builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let timed_out = |stage: &str| {
            let (reason, message) = if caller_bound {
                (
                    "DEADLINE_EXCEEDED",
                    format!("the caller's deadline passed while {stage}"),
                )
            } else {
                (
                    "UPSTREAM_TIMEOUT",
                    format!(
                        "{} did not answer within its {} s timeout ({stage})",
                        settings.name,
                        settings.timeout.as_secs_f64()
                    ),
                )
            };
            GatewayError::new(ErrorClass::DeadlineExceeded, reason, message)
                .with_upstream(context(settings, None))
        };
        let mut response = builder.send().await.map_err(|err| {
            if err.is_timeout() {
                timed_out("waiting for the upstream response")
            } else if err.is_connect() {
                GatewayError::new(
                    ErrorClass::Unavailable,
                    "UPSTREAM_UNREACHABLE",
                    format!("could not connect to {}", settings.name),
                )
                .with_upstream(context(settings, None))
                .never_sent()
            } else {
                GatewayError::new(
                    ErrorClass::Unavailable,
                    "UPSTREAM_TRANSPORT_ERROR",
                    format!(
                        "the connection to {} failed before an answer",
                        settings.name
                    ),
                )
                .with_upstream(context(settings, None))
            }
        })?;
        let status = response.status().as_u16();
        let headers = std::mem::take(response.headers_mut());
        let rate_limit = ratelimit::parse(&headers, SystemTime::now());
        span.record("http.response.status_code", i64::from(status));
        if let Some(remaining) = rate_limit.remaining {
            span.record(
                "flowgate.rate_limit.remaining",
                i64::try_from(remaining).unwrap_or(i64::MAX),
            );
            flowgate_telemetry::metrics().record_rate_limit_remaining(&settings.name, remaining);
        }
        let protocol = |message: String| {
            GatewayError::new(
                ErrorClass::ProtocolError,
                "UPSTREAM_PROTOCOL_ERROR",
                message,
            )
            .with_upstream(context(settings, Some(status)))
            .with_rate_limit(rate_limit.clone())
        };
        if response
            .content_length()
            .is_some_and(|length| length > MAX_RESPONSE_BYTES as u64)
        {
            return Err(protocol(format!(
                "{} sent a response body over {MAX_RESPONSE_BYTES} bytes",
                settings.name
            )));
        }
        let mut body = BytesMut::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(protocol(format!(
                            "{} sent a response body over {MAX_RESPONSE_BYTES} bytes",
                            settings.name
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(err) if err.is_timeout() => {
                    return Err(timed_out("reading the upstream response"));
                }
                Err(_) => {
                    return Err(protocol(format!(
                        "the response from {} ended before its body was complete",
                        settings.name
                    )));
                }
            }
        }
        Ok(UpstreamResponse {
            status,
            headers,
            body: body.freeze(),
            rate_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_take_segments_without_reparsing() {
        let base = BaseUrl::parse("http://127.0.0.1:8700/knouds/");
        let url = base
            .join(&["api", "workflows", "my-flow", "run"], Some("async=true"))
            .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8700/knouds/api/workflows/my-flow/run?async=true"
        );
        assert_eq!(
            url.path(),
            "/knouds/api/workflows/my-flow/run",
            "the span records no query"
        );
        let odd = BaseUrl::parse("https://api.fetchhive.com/v1")
            .join(&["workflow_runs", "a/b?c"], None)
            .unwrap();
        assert_eq!(
            odd.as_str(),
            "https://api.fetchhive.com/v1/workflow_runs/a%2Fb%3Fc"
        );
        assert!(BaseUrl::parse("not a url").join(&["x"], None).is_err());
    }
}
