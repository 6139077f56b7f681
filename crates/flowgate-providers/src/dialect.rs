//! What a dialect is: a small set of hooks ([`Dialect`]) around one shared
//! HTTP path ([`HttpProvider`]).
//!
//! A dialect says how to build its requests and how to read its answers;
//! it never sends anything itself. [`HttpProvider`] does the rest once for
//! every dialect: the auth header, URLs built from path segments (never by
//! re-parsing text), the shared client with its deadline, tracing and
//! metrics, the split of an answer into success or error decoding, the
//! id check and NOT_FOUND of a status lookup, and the schema fetch.
//!
//! A dialect is registered with one line (see [`crate::registry`]).

use std::{fmt, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use flowgate_core::{
    AsyncMode, Deadline, FieldViolation, GatewayError, Invocation, OutputSink, Provider,
    ProviderKind, RunError, RunOutcome, WorkflowRef, WorkflowSchema,
};
use futures::future::BoxFuture;
use http::{HeaderMap, Method};

pub use http::HeaderName;
use serde::Serialize;

use crate::{
    HttpClient, ProviderSettings,
    errors::{run_not_found, safe_run_error},
    http::{BaseUrl, OpenResponse, UpstreamRequest, UpstreamResponse, is_upstream_id},
};

/// One request a dialect wants sent: method, path below the base URL (one
/// entry per segment, percent-encoded when joined), query and JSON body.
#[derive(Debug)]
pub struct Request<'a> {
    /// The HTTP method.
    pub method: Method,
    /// Path segments appended to the provider's base URL.
    pub path: Vec<&'a str>,
    /// The query string, without `?`.
    pub query: Option<&'static str>,
    /// A JSON body.
    pub body: Option<Vec<u8>>,
}

impl<'a> Request<'a> {
    /// `GET base/path…`.
    pub fn get(path: Vec<&'a str>) -> Self {
        Self {
            method: Method::GET,
            path,
            query: None,
            body: None,
        }
    }

    /// `POST base/path…` with `body` as JSON.
    pub fn post_json(path: Vec<&'a str>, body: &impl Serialize) -> Result<Self, GatewayError> {
        let body = serde_json::to_vec(body)
            .map_err(|err| GatewayError::internal(format!("encoding the request: {err}")))?;
        Ok(Self {
            method: Method::POST,
            path,
            query: None,
            body: Some(body),
        })
    }

    /// The same request with a query string.
    pub fn with_query(mut self, query: Option<&'static str>) -> Self {
        self.query = query;
        self
    }
}

/// How a dialect's key is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// `<header>: <key>`, e.g. `Auth::Header(HeaderName::from_static("x-api-key"))`
    /// (an invalid name fails to compile in a `const`).
    Header(HeaderName),
}

/// A dialect's status endpoint: `GET base/<path…>/<id>`.
#[derive(Clone, Copy, Debug)]
pub struct RunLookup {
    /// The path before the id, e.g. `["workflow_runs"]`.
    pub path: &'static [&'static str],
    /// `ResourceInfo.resource_type` of an unknown run, e.g. `knouds.execution`.
    pub resource_type: &'static str,
    /// The reason of an unknown run when the upstream names none.
    pub not_found_reason: &'static str,
    /// What the id is, for messages: `Knouds execution id`.
    pub id_name: &'static str,
}

/// One segment of a configured workflow key for dialects with free-form
/// ids: 1 to 256 characters, no whitespace, control character or `/`.
pub fn is_plain_key(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 256
        && part
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '/')
}

/// The id check of a status lookup: the shared rule, then the dialect's.
pub(crate) fn is_run_id<D: Dialect>(id: &str) -> bool {
    is_upstream_id(id) && D::accepts_run_id(id)
}

/// The hooks of one REST dialect. Everything dialect-specific lives behind
/// them; see the module docs for what is shared.
///
/// Every hook gets the provider's settings (name, key for redaction,
/// default variant). Decoders build their errors with [`crate::errors`],
/// which redacts the key from every upstream string.
pub trait Dialect: fmt::Debug + Default + Send + Sync + 'static {
    /// The dialect's identity.
    const KIND: ProviderKind;
    /// The documented public base URL.
    const DEFAULT_BASE_URL: &'static str;
    /// The default request timeout: the documented longest run plus a margin.
    const DEFAULT_TIMEOUT: Duration;
    /// How the key is sent.
    const AUTH: Auth;
    /// How async invocations run (see [`AsyncMode`]).
    const ASYNC_MODE: AsyncMode;
    /// The status endpoint, when the dialect has one.
    const RUN_LOOKUP: Option<RunLookup> = None;
    /// True when its webhooks are signed with a secret configured per
    /// provider (`webhook_secret_env`); the configuration refuses one for
    /// every other dialect.
    const CONFIGURED_WEBHOOK_SECRET: bool = false;
    /// True when its workflows have variants, so a provider may configure
    /// a `default_variant`; the configuration refuses one for every other
    /// dialect.
    const HAS_VARIANTS: bool = false;

    /// Whether `id` has the shape of the vendor's run ids, checked before
    /// any status request on top of the shared rule, which always applies
    /// first (one path segment: 1 to 128 characters of `[A-Za-z0-9_.-]`,
    /// starting with a letter or digit). Default: the shared rule alone. A
    /// dialect tightens it where the vendor documents a format, never
    /// beyond what its docs allow.
    fn accepts_run_id(id: &str) -> bool {
        let _ = id;
        true
    }

    /// Whether `key` is a workflow key a declared schema may be filed under
    /// in the configuration (`[providers.<name>.workflows."<key>"]`); the
    /// error says what a key looks like.
    fn check_workflow_key(key: &str) -> Result<(), String>;

    /// Dialect rules checked before any network call.
    fn validate(&self, settings: &ProviderSettings, invocation: &Invocation)
    -> Vec<FieldViolation>;

    /// The run request for `invocation` (already validated).
    fn invoke_request<'a>(
        &self,
        settings: &'a ProviderSettings,
        invocation: &'a Invocation,
    ) -> Result<Request<'a>, GatewayError>;

    /// True for the HTTP statuses [`Dialect::decode_success`] reads; every
    /// other answer goes to [`Dialect::decode_error`].
    fn is_success(status: u16) -> bool {
        matches!(status, 200..=202)
    }

    /// A run answer with a success status.
    fn decode_success(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError>;

    /// A run answer with an error status: the typed error, or `Ok` with a
    /// FAILED outcome for a run that ran and failed.
    fn decode_error(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError>;

    /// A status answer (404 is handled before: NOT_FOUND for the run).
    fn decode_status(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        run_id: &str,
    ) -> Result<RunOutcome, GatewayError> {
        let _ = (settings, response, run_id);
        Err(GatewayError::internal(
            "the dialect has no status endpoint to decode",
        ))
    }

    /// The schema request for `workflow`; `None` when the dialect publishes
    /// no schemas (the default).
    fn schema_request<'a>(
        &self,
        workflow: &'a WorkflowRef,
    ) -> Option<Result<Request<'a>, GatewayError>> {
        let _ = workflow;
        None
    }

    /// A schema answer.
    fn decode_schema(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<WorkflowSchema, GatewayError> {
        let _ = (settings, response, workflow);
        Err(GatewayError::internal(
            "the dialect has no schema endpoint to decode",
        ))
    }

    /// A run with its output streamed (see [`Provider::invoke_stream`]):
    /// by default a unary run, for dialects without a streaming endpoint.
    fn invoke_stream<'a>(
        provider: &'a HttpProvider<Self>,
        invocation: &'a Invocation,
        deadline: Deadline,
        sink: &'a OutputSink,
    ) -> BoxFuture<'a, Result<RunOutcome, GatewayError>> {
        let _ = sink;
        Box::pin(provider.invoke(invocation, deadline))
    }
}

/// A configured provider of dialect `D`: settings, the shared client, the
/// parsed base URL and the auth header's name (its value is the key's
/// current one, see [`crate::ApiKey`]).
#[derive(Debug)]
pub struct HttpProvider<D> {
    settings: ProviderSettings,
    http: HttpClient,
    base: BaseUrl,
    auth_name: HeaderName,
    /// `Bearer <key>` rather than the key alone.
    bearer: bool,
    dialect: D,
}

impl<D: Dialect> HttpProvider<D> {
    /// A provider for `settings`, sharing `http`.
    pub fn new(settings: ProviderSettings, http: HttpClient) -> Self {
        let (auth_name, bearer) = match D::AUTH {
            Auth::Bearer => (http::header::AUTHORIZATION, true),
            Auth::Header(name) => (name, false),
        };
        Self {
            base: BaseUrl::parse(&settings.base_url),
            settings,
            http,
            auth_name,
            bearer,
            dialect: D::default(),
        }
    }

    /// The provider's settings.
    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    /// The URL of `request` (public for request-shape tests).
    pub fn url(&self, request: &Request<'_>) -> Result<reqwest::Url, GatewayError> {
        self.base.join(&request.path, request.query)
    }

    /// The run request `invocation` becomes (public for request-shape tests).
    pub fn invoke_request<'a>(
        &'a self,
        invocation: &'a Invocation,
    ) -> Result<Request<'a>, GatewayError> {
        self.dialect.invoke_request(&self.settings, invocation)
    }

    /// Decodes a run answer (public for decoder tests).
    pub fn decode(
        &self,
        status: u16,
        headers: HeaderMap,
        body: Bytes,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        self.decode_run(&UpstreamResponse::new(status, headers, body), workflow)
    }

    /// Decodes a status answer (public for decoder tests).
    pub fn decode_run_status(
        &self,
        status: u16,
        headers: HeaderMap,
        body: Bytes,
        run_id: &str,
    ) -> Result<RunOutcome, GatewayError> {
        self.decode_status(&UpstreamResponse::new(status, headers, body), run_id)
    }

    /// Decodes a schema answer (public for decoder tests).
    pub fn decode_schema(
        &self,
        status: u16,
        headers: HeaderMap,
        body: Bytes,
        workflow: &WorkflowRef,
    ) -> Result<WorkflowSchema, GatewayError> {
        let response = UpstreamResponse::new(status, headers, body);
        self.dialect
            .decode_schema(&self.settings, &response, workflow)
    }

    /// A run answer: success or error decoding by its status.
    pub(crate) fn decode_run(
        &self,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        self.decode_run_as(&self.settings, response, workflow)
    }

    /// [`HttpProvider::decode_run`] with `settings` in place of the
    /// provider's own, e.g. ones that redact one more secret
    /// ([`crate::redaction::also_redacting`]).
    pub(crate) fn decode_run_as(
        &self,
        settings: &ProviderSettings,
        response: &UpstreamResponse,
        workflow: &WorkflowRef,
    ) -> Result<RunOutcome, GatewayError> {
        if D::is_success(response.status) {
            self.dialect.decode_success(settings, response, workflow)
        } else {
            self.dialect.decode_error(settings, response, workflow)
        }
    }

    fn decode_status(
        &self,
        response: &UpstreamResponse,
        run_id: &str,
    ) -> Result<RunOutcome, GatewayError> {
        if let (404, Some(lookup)) = (response.status, D::RUN_LOOKUP) {
            return Err(run_not_found(
                &self.settings,
                response,
                lookup.not_found_reason,
                lookup.resource_type,
                run_id,
            ));
        }
        self.dialect.decode_status(&self.settings, response, run_id)
    }

    /// `request` ready to send, with the key's current value.
    pub(crate) fn upstream<'r>(
        &'r self,
        request: Request<'_>,
    ) -> Result<UpstreamRequest<'r>, GatewayError> {
        Ok(UpstreamRequest {
            url: self.url(&request)?,
            method: request.method,
            auth: (
                &self.auth_name,
                self.settings.api_key.header_value(self.bearer),
            ),
            accept: "application/json",
            body: request.body,
        })
    }

    /// Sends `request` and reads the whole answer.
    pub(crate) async fn send(
        &self,
        request: Request<'_>,
        deadline: Deadline,
    ) -> Result<UpstreamResponse, GatewayError> {
        self.send_prepared(self.upstream(request)?, deadline).await
    }

    /// Sends a prepared request and reads the whole answer.
    pub(crate) async fn send_prepared(
        &self,
        request: UpstreamRequest<'_>,
        deadline: Deadline,
    ) -> Result<UpstreamResponse, GatewayError> {
        self.http.send(&self.settings, request, deadline).await
    }

    /// Sends `request` and answers once its headers arrived (a streamed
    /// answer; see [`HttpClient::open`]).
    pub(crate) async fn open(
        &self,
        request: UpstreamRequest<'_>,
        deadline: Deadline,
    ) -> Result<OpenResponse, GatewayError> {
        self.http.open(&self.settings, request, deadline).await
    }
}

#[async_trait]
impl<D: Dialect> Provider for HttpProvider<D> {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn kind(&self) -> ProviderKind {
        D::KIND
    }

    fn validate(&self, invocation: &Invocation) -> Vec<FieldViolation> {
        self.dialect.validate(&self.settings, invocation)
    }

    async fn invoke(
        &self,
        invocation: &Invocation,
        deadline: Deadline,
    ) -> Result<RunOutcome, GatewayError> {
        let request = self.invoke_request(invocation)?;
        let response = self.send(request, deadline).await?;
        self.decode_run(&response, &invocation.workflow)
    }

    async fn invoke_stream(
        &self,
        invocation: &Invocation,
        deadline: Deadline,
        sink: &OutputSink,
    ) -> Result<RunOutcome, GatewayError> {
        D::invoke_stream(self, invocation, deadline, sink).await
    }

    fn async_mode(&self) -> AsyncMode {
        D::ASYNC_MODE
    }

    fn safe_run_error(&self, error: RunError) -> RunError {
        safe_run_error(&self.settings, error)
    }

    async fn run_status(
        &self,
        upstream_id: &str,
        deadline: Deadline,
    ) -> Result<Option<RunOutcome>, GatewayError> {
        let Some(lookup) = D::RUN_LOOKUP else {
            return Ok(None);
        };
        // Only an id that names one resource, in the dialect's documented
        // shape, is put into a path.
        if !is_run_id::<D>(upstream_id) {
            return Err(GatewayError::not_found(
                lookup.not_found_reason,
                lookup.resource_type,
                upstream_id,
                format!("not a {}", lookup.id_name),
            ));
        }
        let mut path = lookup.path.to_vec();
        path.push(upstream_id);
        let response = self.send(Request::get(path), deadline).await?;
        self.decode_status(&response, upstream_id).map(Some)
    }

    async fn fetch_schema(
        &self,
        workflow: &WorkflowRef,
        deadline: Deadline,
    ) -> Result<Option<WorkflowSchema>, GatewayError> {
        let Some(request) = self.dialect.schema_request(workflow) else {
            return Ok(None);
        };
        let response = self.send(request?, deadline).await?;
        self.dialect
            .decode_schema(&self.settings, &response, workflow)
            .map(Some)
    }

    fn default_variant(&self) -> Option<&str> {
        self.settings.default_variant.as_deref()
    }
}

#[cfg(test)]
mod run_id_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::knouds::Knouds;
    use flowgate_core::SecretString;

    const KEY: &str = "knouds_live_7Hq2ZpX9vB4mN8rT1cW6yK3jD5fG0sLaQeU";

    #[test]
    fn callback_run_errors_are_made_safe_like_decoded_ones() {
        let settings = ProviderSettings::new("kn", ProviderKind::Knouds, SecretString::new(KEY));
        let provider = Knouds::new(settings, HttpClient::new().unwrap());
        let safe = provider.safe_run_error(RunError {
            code: KEY.into(),
            message: format!("echo {KEY} {}", "x".repeat(1000)),
        });
        assert_eq!(safe.code, crate::errors::UNREADABLE_REASON);
        assert!(!safe.message.contains(&KEY[..12]), "{}", safe.message);
        assert!(safe.message.chars().count() <= 301);
    }

    #[test]
    fn status_lookups_refuse_ids_that_are_not_one_path_segment() {
        let settings = ProviderSettings::new("kn", ProviderKind::Knouds, SecretString::new(KEY));
        let provider = Knouds::new(settings, HttpClient::new().unwrap());
        let error = block_on(provider.run_status("../x", Deadline::NONE)).unwrap_err();
        assert_eq!(error.reason, "EXECUTION_NOT_FOUND");
        assert_eq!(
            error.resource.as_ref().unwrap().resource_type,
            "knouds.execution"
        );
    }

    /// Runs a future on a one-thread runtime.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }
}
