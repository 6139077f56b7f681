//! The one HTTP client every dialect shares, and the transport-level error
//! mapping (connect failures, timeouts, oversized bodies).
//!
//! The client is hyper-util's pooled client over rustls (the ring provider,
//! the platform's trust store, ALPN `h2` then `http/1.1`): one parse of the
//! request URI per call, no redirect machinery in the path. When the proxy
//! environment variables name a proxy, connections go through it (see
//! `http/proxy.rs`); when none does, the connector is the direct one.
//!
//! Every upstream request gets a client span (`POST`, kind CLIENT) with
//! `http.request.method`, `server.address`, `server.port`, `url.path` (never
//! the query string, never a header), `http.response.status_code`,
//! `flowgate.provider`, `flowgate.dialect`, `flowgate.retry.attempt` and
//! `flowgate.rate_limit.remaining`; its W3C trace context is injected as
//! `traceparent`/`tracestate` headers; and the upstream metrics are
//! recorded (`flowgate.upstream.*`).
//!
//! Redirects are never followed. Vendors do not redirect API calls, and
//! following one would forward the auth header (Knouds' `x-api-key`) to
//! wherever a `Location` points. A 3xx answer becomes INTERNAL with reason
//! `UPSTREAM_REDIRECT` (a configuration or vendor fault no retry fixes, so
//! not UNAVAILABLE); the target of the redirect receives nothing. (Callback
//! forwarding uses its own client, `flowgate_webhook::callback_client`,
//! which follows no redirects either and checks every resolved address.)

use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use flowgate_core::{
    Deadline, ErrorClass, GatewayError, RateLimitInfo, UpstreamContext, reason::Reason,
};
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Body as _, Incoming};
use tracing::{Instrument as _, field};

use crate::{ProviderSettings, ratelimit};

mod bounded;
mod build;
mod proxy;
mod url;

pub use proxy::ProxyConfig;
pub(crate) use url::{BaseUrl, is_upstream_id};

/// Largest upstream response body accepted.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// The upstream's request id header.
const REQUEST_ID: &str = "x-request-id";
/// The `User-Agent` of every upstream request.
const USER_AGENT: HeaderValue =
    HeaderValue::from_static(concat!("flowgate/", env!("CARGO_PKG_VERSION")));
/// The `Content-Type` of every request body.
const JSON: HeaderValue = HeaderValue::from_static("application/json");

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
    transport: build::Transport,
}

/// A complete upstream answer, as every dialect decoder reads it.
#[derive(Debug)]
pub struct UpstreamResponse {
    /// The HTTP status.
    pub status: u16,
    /// The headers (`X-Request-Id` already redacted or dropped).
    pub headers: HeaderMap,
    /// The whole body (bounded).
    pub body: Bytes,
    /// The rate-limit headers, parsed.
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
            .get(REQUEST_ID)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    }
}

/// One prepared upstream request.
#[derive(Debug)]
pub(crate) struct UpstreamRequest<'a> {
    pub method: http::Method,
    pub url: reqwest::Url,
    pub auth: (&'a HeaderName, HeaderValue),
    /// The `Accept` header: `application/json` unless the answer is a stream.
    pub accept: &'static str,
    pub body: Option<Vec<u8>>,
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

/// An upstream answer whose headers arrived and whose body is still to be
/// read, chunk by chunk ([`OpenResponse::chunk`]) or whole
/// ([`OpenResponse::read_all`]). Dropping it closes the connection.
#[derive(Debug)]
pub(crate) struct OpenResponse {
    body: Incoming,
    /// When the request's time budget runs out (the whole body included).
    until: tokio::time::Instant,
    /// The HTTP status.
    pub status: u16,
    /// The headers (`X-Request-Id` already redacted or dropped).
    pub headers: HeaderMap,
    /// The rate-limit headers, parsed.
    pub rate_limit: RateLimitInfo,
    /// The caller's deadline, not the provider's timeout, bounds the call.
    caller_bound: bool,
}

impl OpenResponse {
    /// The next piece of the body, `None` at its end. A timeout is
    /// DEADLINE_EXCEEDED; a body cut short is `UPSTREAM_PROTOCOL_ERROR`.
    pub(crate) async fn chunk(
        &mut self,
        settings: &ProviderSettings,
    ) -> Result<Option<Bytes>, GatewayError> {
        loop {
            let frame = match tokio::time::timeout_at(self.until, self.body.frame()).await {
                Err(_) => {
                    return Err(timed_out(
                        settings,
                        self.caller_bound,
                        "reading the upstream response",
                    ));
                }
                Ok(None) => return Ok(None),
                Ok(Some(Ok(frame))) => frame,
                Ok(Some(Err(_))) => {
                    return Err(self.protocol(
                        settings,
                        format!(
                            "the response from {} ended before its body was complete",
                            settings.name
                        ),
                    ));
                }
            };
            // Trailers carry no body.
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
    }

    /// INTERNAL / `UPSTREAM_PROTOCOL_ERROR` about this answer.
    pub(crate) fn protocol(&self, settings: &ProviderSettings, message: String) -> GatewayError {
        GatewayError::new(
            ErrorClass::ProtocolError,
            Reason::UpstreamProtocolError,
            message,
        )
        .with_upstream(context(settings, Some(self.status)))
        .with_rate_limit(self.rate_limit.clone())
    }

    /// Reads the whole body, up to [`MAX_RESPONSE_BYTES`].
    pub(crate) async fn read_all(
        mut self,
        settings: &ProviderSettings,
    ) -> Result<UpstreamResponse, GatewayError> {
        let too_large = |open: &Self| {
            open.protocol(
                settings,
                format!(
                    "{} sent a response body over {MAX_RESPONSE_BYTES} bytes",
                    settings.name
                ),
            )
        };
        if self
            .body
            .size_hint()
            .exact()
            .is_some_and(|length| length > MAX_RESPONSE_BYTES as u64)
        {
            return Err(too_large(&self));
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = self.chunk(settings).await? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(too_large(&self));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(UpstreamResponse {
            status: self.status,
            headers: self.headers,
            body: body.freeze(),
            rate_limit: self.rate_limit,
        })
    }
}

/// DEADLINE_EXCEEDED while `stage`: the caller's deadline when it bounded
/// the request, else the provider's timeout.
fn timed_out(settings: &ProviderSettings, caller_bound: bool, stage: &str) -> GatewayError {
    let (reason, message) = if caller_bound {
        (
            Reason::DeadlineExceeded,
            format!("the caller's deadline passed while {stage}"),
        )
    } else {
        (
            Reason::UpstreamTimeout,
            format!(
                "{} did not answer within its {} s timeout ({stage})",
                settings.name,
                settings.timeout.as_secs_f64()
            ),
        )
    };
    GatewayError::new(ErrorClass::DeadlineExceeded, reason, message)
        .with_upstream(context(settings, None))
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
        let span = client_span(settings, &request);
        let started = Instant::now();
        let result = async {
            self.open_in_span(settings, request, deadline, &span)
                .await?
                .read_all(settings)
                .await
        }
        .instrument(span.clone())
        .await;
        finish_span(
            &span,
            settings,
            started,
            result.as_ref().map(|response| response.status),
        );
        result
    }

    /// Sends `request` within the deadline and answers once the headers
    /// arrived; the body is read by the caller (a streamed answer). The
    /// deadline still bounds the whole body. The client span and metrics
    /// cover the time to the headers.
    pub(crate) async fn open(
        &self,
        settings: &ProviderSettings,
        request: UpstreamRequest<'_>,
        deadline: Deadline,
    ) -> Result<OpenResponse, GatewayError> {
        let span = client_span(settings, &request);
        let started = Instant::now();
        let result = self
            .open_in_span(settings, request, deadline, &span)
            .instrument(span.clone())
            .await;
        finish_span(
            &span,
            settings,
            started,
            result.as_ref().map(|response| response.status),
        );
        result
    }

    async fn open_in_span(
        &self,
        settings: &ProviderSettings,
        request: UpstreamRequest<'_>,
        deadline: Deadline,
        span: &tracing::Span,
    ) -> Result<OpenResponse, GatewayError> {
        let budget = deadline.budget(settings.timeout);
        let caller_bound = budget < settings.timeout;
        let now = tokio::time::Instant::now();
        // A budget too far out to add is no bound: a day is as good.
        let until = now
            .checked_add(budget)
            .unwrap_or_else(|| now + Duration::from_secs(24 * 3600));
        let uri = http::Uri::try_from(request.url.as_str()).map_err(|_| {
            GatewayError::internal(format!("the upstream URL for {} is invalid", settings.name))
        })?;
        let has_body = request.body.is_some();
        let mut outgoing =
            http::Request::new(Full::new(request.body.map(Bytes::from).unwrap_or_default()));
        *outgoing.method_mut() = request.method;
        *outgoing.uri_mut() = uri;
        let headers = outgoing.headers_mut();
        headers.insert(request.auth.0.clone(), request.auth.1);
        headers.insert(header::ACCEPT, HeaderValue::from_static(request.accept));
        headers.insert(header::USER_AGENT, USER_AGENT);
        if has_body {
            headers.insert(header::CONTENT_TYPE, JSON);
        }
        flowgate_telemetry::inject(span, headers);
        let response = match tokio::time::timeout_at(until, self.transport.request(outgoing)).await
        {
            Ok(Ok(response)) => response,
            Ok(Err(err)) => return Err(send_failed(settings, caller_bound, &err)),
            Err(_) => {
                return Err(timed_out(
                    settings,
                    caller_bound,
                    "waiting for the upstream response",
                ));
            }
        };
        let (parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        let mut headers = parts.headers;
        clean_request_id(settings, &mut headers);
        let rate_limit = ratelimit::parse(&headers, SystemTime::now());
        span.record("http.response.status_code", i64::from(status));
        if (300..400).contains(&status) {
            return Err(redirect_refused(settings, status).with_rate_limit(rate_limit));
        }
        if let Some(remaining) = rate_limit.remaining {
            span.record(
                "flowgate.rate_limit.remaining",
                i64::try_from(remaining).unwrap_or(i64::MAX),
            );
            flowgate_telemetry::metrics().record_rate_limit_remaining(&settings.name, remaining);
        }
        Ok(OpenResponse {
            body,
            until,
            status,
            headers,
            rate_limit,
            caller_bound,
        })
    }
}

/// A request that got no answer: a connect failure (nothing was sent), a
/// connect timeout, or a connection that failed before the answer.
fn send_failed(
    settings: &ProviderSettings,
    caller_bound: bool,
    err: &hyper_util::client::legacy::Error,
) -> GatewayError {
    // A proxy that cannot be reached (or refuses) is named as such, even
    // when its connect timed out.
    if let Some(proxy) = find_cause::<proxy::ProxyError>(err) {
        return GatewayError::new(
            ErrorClass::Unavailable,
            Reason::UpstreamUnreachable,
            format!("could not connect to {} {proxy}", settings.name),
        )
        .with_upstream(context(settings, None))
        .never_sent();
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return timed_out(settings, caller_bound, "waiting for the upstream response");
        }
        source = cause.source();
    }
    if err.is_connect() {
        GatewayError::new(
            ErrorClass::Unavailable,
            Reason::UpstreamUnreachable,
            format!("could not connect to {}", settings.name),
        )
        .with_upstream(context(settings, None))
        .never_sent()
    } else {
        GatewayError::new(
            ErrorClass::Unavailable,
            Reason::UpstreamTransportError,
            format!(
                "the connection to {} failed before an answer",
                settings.name
            ),
        )
        .with_upstream(context(settings, None))
    }
}

/// The first error of type `T` in `err`'s chain of causes.
fn find_cause<'a, T: std::error::Error + 'static>(
    err: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut source = Some(err);
    while let Some(cause) = source {
        if let Some(found) = cause.downcast_ref::<T>() {
            return Some(found);
        }
        source = cause.source();
    }
    None
}

/// The client span of one upstream request (see the module docs).
fn client_span(settings: &ProviderSettings, request: &UpstreamRequest<'_>) -> tracing::Span {
    let url = &request.url;
    let method = request.method.as_str();
    tracing::info_span!(
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
    )
}

/// Records a request's outcome on its span and in the upstream metrics.
fn finish_span(
    span: &tracing::Span,
    settings: &ProviderSettings,
    started: Instant,
    result: Result<u16, &GatewayError>,
) {
    let status = match result {
        Ok(status) => Some(status),
        Err(error) => {
            span.record("error.type", error.reason.as_str());
            error.upstream.as_ref().and_then(|up| up.http_status)
        }
    };
    if status.is_none_or(|status| status >= 500) {
        span.record("otel.status_code", "error");
    }
    flowgate_telemetry::metrics().record_upstream(
        &settings.name,
        settings.kind.as_str(),
        status,
        started.elapsed(),
    );
}

/// Replaces `X-Request-Id` with its redacted form (see
/// [`crate::redaction::upstream_request_id`]) or drops it, so every reader of
/// the answer's headers gets a safe value.
fn clean_request_id(settings: &ProviderSettings, headers: &mut HeaderMap) {
    let Some(raw) = headers.remove(REQUEST_ID) else {
        return;
    };
    let clean = raw
        .to_str()
        .ok()
        .and_then(|text| crate::redaction::upstream_request_id(settings, text))
        .and_then(|text| HeaderValue::from_str(&text).ok());
    if let Some(clean) = clean {
        headers.insert(REQUEST_ID, clean);
    }
}

/// INTERNAL / `UPSTREAM_REDIRECT`: the upstream answered a 3xx, which the
/// gateway never follows (its `Location` is not even read).
fn redirect_refused(settings: &ProviderSettings, status: u16) -> GatewayError {
    GatewayError::new(
        ErrorClass::ProtocolError,
        Reason::UpstreamRedirect,
        format!(
            "{} answered HTTP {status} (a redirect); flowgate follows no redirects: check the provider's base_url",
            settings.name
        ),
    )
    .with_upstream(context(settings, Some(status)))
}
