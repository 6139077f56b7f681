//! flowgate's engine vocabulary, free of any wire format.
//!
//! The gRPC edge turns protobuf messages into these types and back; the
//! provider dialects turn them into vendor REST calls and back. Neither side
//! sees the other's types: this crate is the only thing they share.
//!
//! - [`WorkflowTarget`] / [`WorkflowRef`]: which workflow, in the shape the
//!   provider's dialect addresses it by.
//! - [`Invocation`]: one validated call.
//! - [`RunOutcome`], [`RunStatus`], [`Usage`], [`RateLimitInfo`]: what came back.
//! - [`GatewayError`]: every failure, typed; mapped to a gRPC status in one
//!   place at the edge.
//! - [`Provider`]: the trait every dialect implements; [`Gateway`] routes
//!   invocations to providers.
//! - [`OutputSink`], [`StreamEvent`]: streamed output, with backpressure.
//! - [`LimitStore`], [`ReplayStore`]: the state replicas share (provider
//!   limits, webhook replay ids), in memory for one replica or on Redis.
//! - [`WorkflowSchema`]: a workflow's input fields and their validation;
//!   [`SchemaCatalog`]: declared schemas plus the moka cache of discovered
//!   ones, consulted by [`Gateway::invoke`] before any upstream call.

mod callback;
pub mod caller_quota;
mod catalog;
mod deadline;
pub mod depth;
pub mod duration;
mod error;
mod gateway;
mod invocation;
pub mod numbers;
mod outcome;
mod provider;
pub mod reason;
mod run_id;
mod schema;
mod secret;
mod shared_limits;
mod stream;
mod target;
pub mod violations;

pub use callback::{CallbackPolicy, InvalidAllowEntry, MAX_CALLBACK_URL_BYTES, is_forbidden_ip};
pub use caller_quota::{
    CallerQuota, CallerQuotaStore, MemoryCallerQuotaStore, QuotaBalance, QuotaLimit, QuotaVerdict,
};
pub use catalog::{
    DeclaredSchemas, SchemaCacheObserver, SchemaCacheSettings, SchemaCacheStats, SchemaCatalog,
    SchemaLookup, SchemaSource,
};
pub use deadline::Deadline;
pub use error::{
    ErrorClass, ErrorData, FieldViolation, GatewayError, PreconditionViolation, QuotaViolation,
    ResourceRef, UpstreamContext,
};
pub use gateway::{Gateway, Invoked};
pub use invocation::{AsyncDelivery, Invocation};
pub use numbers::id_text;
pub use outcome::{RateLimitInfo, RunError, RunOutcome, RunStatus, Usage, decode_output};
pub use provider::{AsyncMode, Provider};
pub use run_id::{RunId, RunIdSigner};
pub use schema::{SchemaField, ValueType, WorkflowSchema, json_type_name};
pub use secret::SecretString;
pub use shared_limits::{
    LimitFailurePolicy, LimitRequest, LimitStore, LimitVerdict, RateQuota, ReplayStore, RunSlot,
    SharedLimitsSettings, SlotQuota, StateStoreUnavailable, WindowNote,
};
pub use stream::{OutputSink, StreamEvent};
pub use target::{Addressing, ProviderKind, WorkflowRef, WorkflowTarget};
pub use violations::{MAX_LISTED_VIOLATIONS, Violations};
