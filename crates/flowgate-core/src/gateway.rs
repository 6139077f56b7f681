//! Routing invocations to providers, after every pre-flight check.
//!
//! [`Gateway::invoke`] refuses a call before anything paid is sent when the
//! invocation breaks a dialect-independent rule, a dialect rule, or the
//! workflow's input schema (from the [`SchemaCatalog`]); all violations come
//! back in one INVALID_ARGUMENT. A workflow the provider reports unknown is
//! NOT_FOUND without a run; a schema that cannot be fetched lets the call go
//! ahead unvalidated.
//!
//! Every upstream run starts through the same three steps:
//! [`Gateway::resolve`] picks the provider, [`Gateway::check`] runs the
//! pre-flight checks, [`Gateway::send`] calls it (and drops a cached schema
//! the upstream contradicted). [`Gateway::invoke`] is the three in a row;
//! the run tracker uses them for async runs, running `send` in the
//! background for dialects without an async mode.

use std::sync::Arc;

use crate::{
    CallbackPolicy, Deadline, ErrorClass, FieldViolation, GatewayError, Invocation, OutputSink,
    PreconditionViolation, Provider, RunId, RunIdSigner, RunOutcome, SchemaCatalog, SchemaLookup,
    WorkflowSchema, WorkflowTarget, reason::Reason,
};

/// The engine's front door: the configured providers, the rules that pick
/// one for a target, the schema catalog checked before each run, the signer
/// of the run ids callers get, and the policy for their callback URLs.
#[derive(Debug, Clone)]
pub struct Gateway {
    providers: Vec<Arc<dyn Provider>>,
    schemas: Arc<SchemaCatalog>,
    run_ids: Arc<RunIdSigner>,
    callbacks: Arc<CallbackPolicy>,
}

/// A finished invocation: who ran it, its run id and what came back.
#[derive(Debug)]
pub struct Invoked {
    /// The provider that ran the workflow.
    pub provider: Arc<dyn Provider>,
    /// The gateway's run id.
    pub run_id: RunId,
    /// What the provider answered.
    pub outcome: RunOutcome,
}

impl Invoked {
    /// `outcome` of `provider`, with the run id it names.
    fn new(provider: &Arc<dyn Provider>, outcome: RunOutcome) -> Self {
        let run_id = match outcome.upstream_run_id.as_deref() {
            Some(upstream) => RunId::new(provider.name(), upstream),
            None => RunId::local(provider.name()),
        };
        Self {
            provider: Arc::clone(provider),
            run_id,
            outcome,
        }
    }
}

impl Gateway {
    /// A gateway over `providers` (names are unique: configuration checks it).
    /// Uses the default schema cache settings and no declared schemas; see
    /// [`Gateway::with_schemas`].
    pub fn new(providers: Vec<Arc<dyn Provider>>) -> Self {
        Self {
            providers,
            schemas: Arc::new(SchemaCatalog::default()),
            run_ids: Arc::new(RunIdSigner::ephemeral()),
            callbacks: Arc::new(CallbackPolicy::strict()),
        }
    }

    /// Replaces the run id signer (default: a random per-process secret).
    pub fn with_run_ids(mut self, run_ids: RunIdSigner) -> Self {
        self.run_ids = Arc::new(run_ids);
        self
    }

    /// Signs the run ids given to callers and verifies those they send.
    pub fn run_ids(&self) -> &Arc<RunIdSigner> {
        &self.run_ids
    }

    /// Replaces the callback URL policy (default: [`CallbackPolicy::strict`]).
    pub fn with_callback_policy(mut self, policy: CallbackPolicy) -> Self {
        self.callbacks = Arc::new(policy);
        self
    }

    /// Where callbacks may go.
    pub fn callback_policy(&self) -> &Arc<CallbackPolicy> {
        &self.callbacks
    }

    /// Replaces the schema catalog (cache settings and declared schemas).
    pub fn with_schemas(mut self, schemas: SchemaCatalog) -> Self {
        self.schemas = Arc::new(schemas);
        self
    }

    /// The schema catalog (for its counters).
    pub fn schemas(&self) -> &Arc<SchemaCatalog> {
        &self.schemas
    }

    /// The configured providers.
    pub fn providers(&self) -> &[Arc<dyn Provider>] {
        &self.providers
    }

    /// Looks a provider up by name.
    pub fn provider(&self, name: &str) -> Option<&Arc<dyn Provider>> {
        self.providers
            .iter()
            .find(|provider| provider.name() == name)
    }

    /// Picks the provider for `target`: the named one, which must address
    /// workflows the way the target does, or else the only provider that
    /// does.
    pub fn resolve(&self, target: &WorkflowTarget) -> Result<&Arc<dyn Provider>, GatewayError> {
        let kind = target.workflow.kind();
        let addressing = target.workflow.addressing();
        if let Some(name) = target.provider.as_deref() {
            let provider = self.provider(name).ok_or_else(|| {
                GatewayError::not_found(
                    Reason::UnknownProvider,
                    "flowgate.provider",
                    name,
                    format!("no provider named {name:?} is configured"),
                )
            })?;
            if provider.kind().addressing() != addressing {
                return Err(GatewayError::invalid_argument(vec![FieldViolation::new(
                    format!("target.{}", kind.target_field()),
                    format!(
                        "provider {name:?} speaks the {} dialect: address its workflows with target.{}",
                        provider.kind(),
                        provider.kind().target_field()
                    ),
                )]));
            }
            return Ok(provider);
        }
        let speaks = |p: &&Arc<dyn Provider>| p.kind().addressing() == addressing;
        let mut candidates = self.providers.iter().filter(speaks);
        match (candidates.next(), candidates.next()) {
            (Some(only), None) => Ok(only),
            (None, _) => Err(GatewayError::not_found(
                Reason::NoProviderForDialect,
                "flowgate.provider",
                kind.as_str(),
                format!(
                    "no configured provider speaks the {kind} dialect (target.{})",
                    kind.target_field()
                ),
            )),
            (Some(_), Some(_)) => {
                let names: Vec<&str> = self
                    .providers
                    .iter()
                    .filter(speaks)
                    .map(|p| p.name())
                    .collect();
                Err(GatewayError::invalid_argument(vec![FieldViolation::new(
                    "target.provider",
                    format!(
                        "required: several providers speak the {kind} dialect ({})",
                        names.join(", ")
                    ),
                )]))
            }
        }
    }

    /// Runs every pre-flight check of `invocation` on `provider` (already
    /// picked by [`Gateway::resolve`]): the request's own rules, the
    /// dialect's, and the workflow's input schema when one is known; all
    /// violations come back in one error.
    pub async fn check(
        &self,
        provider: &Arc<dyn Provider>,
        invocation: &Invocation,
        deadline: Deadline,
    ) -> Result<(), GatewayError> {
        let mut violations = invocation.validate();
        violations.extend(provider.validate(invocation));
        // A malformed target names no workflow whose schema could be known.
        if !violations
            .listed()
            .iter()
            .any(|v| v.field.starts_with("target"))
        {
            match self
                .schemas
                .schema(provider, &invocation.workflow, deadline)
                .await
            {
                SchemaLookup::Found { schema, .. } => {
                    violations.append(schema.validate(&invocation.inputs));
                }
                SchemaLookup::UnknownWorkflow(error) => return Err((*error).clone()),
                SchemaLookup::NotPublished | SchemaLookup::Unavailable(_) => {}
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(GatewayError::invalid_argument(violations))
        }
    }

    /// Sends a checked invocation to `provider`: the one place an upstream
    /// run starts, for synchronous calls, native async starts and
    /// gateway-run background runs alike. Refuses to send once `deadline`
    /// has passed; when the upstream refuses inputs the cached schema
    /// accepted, the workflow may have changed, so its schema is fetched
    /// afresh next time.
    pub async fn send(
        &self,
        provider: &Arc<dyn Provider>,
        invocation: &Invocation,
        deadline: Deadline,
    ) -> Result<RunOutcome, GatewayError> {
        self.sent(
            provider,
            invocation,
            deadline,
            provider.invoke(invocation, deadline),
        )
        .await
    }

    /// The deadline check and schema invalidation of [`Gateway::send`]
    /// around `call`, one upstream run of `invocation` on `provider`.
    async fn sent(
        &self,
        provider: &Arc<dyn Provider>,
        invocation: &Invocation,
        deadline: Deadline,
        call: impl Future<Output = Result<RunOutcome, GatewayError>>,
    ) -> Result<RunOutcome, GatewayError> {
        if deadline.is_expired() {
            return Err(GatewayError::new(
                ErrorClass::DeadlineExceeded,
                Reason::DeadlineExceeded,
                "the caller's deadline passed before the call was sent upstream",
            )
            // Nothing reached the upstream: an idempotency key is not spent.
            .never_sent());
        }
        let answer = call.await;
        if let Err(error) = &answer
            && error.class == ErrorClass::InvalidArgument
            && error.upstream.is_some()
        {
            self.schemas
                .invalidate(provider.name(), &invocation.workflow)
                .await;
        }
        answer
    }

    /// [`Gateway::invoke`] with the output streamed into `sink` as the
    /// provider produces it (see [`Provider::invoke_stream`]): the same
    /// routing and pre-flight checks, nothing sent unless they passed.
    pub async fn invoke_stream(
        &self,
        target: &WorkflowTarget,
        invocation: &Invocation,
        deadline: Deadline,
        sink: &OutputSink,
    ) -> Result<Invoked, GatewayError> {
        let provider = self.resolve(target)?;
        self.check(provider, invocation, deadline).await?;
        let call = provider.invoke_stream(invocation, deadline, sink);
        let outcome = self.sent(provider, invocation, deadline, call).await?;
        Ok(Invoked::new(provider, outcome))
    }

    /// Validates and runs one invocation. Nothing is sent upstream unless
    /// every check passed; all violations come back in one error.
    pub async fn invoke(
        &self,
        target: &WorkflowTarget,
        invocation: &Invocation,
        deadline: Deadline,
    ) -> Result<Invoked, GatewayError> {
        let provider = self.resolve(target)?;
        self.invoke_on(provider, invocation, deadline).await
    }

    /// [`Gateway::invoke`] on a provider already picked by
    /// [`Gateway::resolve`] ([`Gateway::check`], then [`Gateway::send`]).
    pub async fn invoke_on(
        &self,
        provider: &Arc<dyn Provider>,
        invocation: &Invocation,
        deadline: Deadline,
    ) -> Result<Invoked, GatewayError> {
        self.check(provider, invocation, deadline).await?;
        let outcome = self.send(provider, invocation, deadline).await?;
        Ok(Invoked::new(provider, outcome))
    }

    /// The input schema of `target`'s workflow, from the catalog.
    ///
    /// NOT_FOUND (with the resource) when the provider does not know the
    /// workflow; FAILED_PRECONDITION (`SCHEMA_NOT_DECLARED`, precondition
    /// type `SCHEMA`) when the dialect publishes no schemas and the
    /// configuration declares none; the fetch's own error when the schema
    /// endpoint failed.
    pub async fn workflow_schema(
        &self,
        target: &WorkflowTarget,
        deadline: Deadline,
    ) -> Result<Arc<WorkflowSchema>, GatewayError> {
        let provider = self.resolve(target)?;
        let violations: Vec<FieldViolation> = provider
            .validate(&Invocation::new(target.workflow.clone()))
            .into_iter()
            .filter(|v| v.field.starts_with("target"))
            .collect();
        if !violations.is_empty() {
            return Err(GatewayError::invalid_argument(violations));
        }
        match self
            .schemas
            .schema(provider, &target.workflow, deadline)
            .await
        {
            SchemaLookup::Found { schema, .. } => Ok(schema),
            SchemaLookup::UnknownWorkflow(error) | SchemaLookup::Unavailable(error) => {
                Err((*error).clone())
            }
            SchemaLookup::NotPublished => {
                let label = target.workflow.label();
                let mut error = GatewayError::new(
                    ErrorClass::FailedPrecondition,
                    Reason::SchemaNotDeclared,
                    format!(
                        "{} publishes no workflow schemas and none is declared for {label:?} on provider {:?}",
                        provider.kind(),
                        provider.name()
                    ),
                );
                error.precondition = Some(PreconditionViolation {
                    kind: "SCHEMA".into(),
                    subject: format!("provider:{}/{label}", provider.name()),
                    description: format!(
                        "declare the inputs in the configuration under [providers.{}.workflows.\"{label}\"]",
                        provider.name()
                    ),
                });
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProviderKind, RunStatus, WorkflowRef};
    use async_trait::async_trait;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct Fake {
        name: &'static str,
        kind: ProviderKind,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Provider for Fake {
        fn name(&self) -> &str {
            self.name
        }
        fn kind(&self) -> ProviderKind {
            self.kind
        }
        fn validate(&self, invocation: &Invocation) -> Vec<FieldViolation> {
            match &invocation.workflow {
                WorkflowRef::Slug(slug) if slug.contains('X') => {
                    vec![FieldViolation::new("target.slug", "bad slug")]
                }
                _ => Vec::new(),
            }
        }
        async fn invoke(&self, _: &Invocation, _: Deadline) -> Result<RunOutcome, GatewayError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(RunOutcome {
                status: Some(RunStatus::Completed),
                upstream_run_id: Some("up-1".into()),
                ..RunOutcome::default()
            })
        }
    }

    fn fake(name: &'static str, kind: ProviderKind) -> Arc<Fake> {
        Arc::new(Fake {
            name,
            kind,
            calls: AtomicUsize::new(0),
        })
    }

    fn target(provider: Option<&str>, workflow: WorkflowRef) -> WorkflowTarget {
        WorkflowTarget {
            provider: provider.map(str::to_owned),
            workflow,
        }
    }

    #[test]
    fn the_only_provider_of_a_dialect_is_inferred() {
        let gateway = Gateway::new(vec![
            fake("kn", ProviderKind::Knouds),
            fake("fh", ProviderKind::FetchHive),
        ]);
        let resolved = gateway
            .resolve(&target(None, WorkflowRef::Slug("a".into())))
            .unwrap();
        assert_eq!(resolved.name(), "kn");
    }

    #[test]
    fn ambiguous_dialect_requires_the_provider() {
        let gateway = Gateway::new(vec![
            fake("a", ProviderKind::Knouds),
            fake("b", ProviderKind::Knouds),
        ]);
        let err = gateway
            .resolve(&target(None, WorkflowRef::Slug("s".into())))
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::InvalidArgument);
        assert_eq!(err.violations[0].field, "target.provider");
        assert!(err.violations[0].description.contains("a, b"));
    }

    #[test]
    fn dialect_mismatch_is_invalid_argument() {
        let gateway = Gateway::new(vec![fake("fh", ProviderKind::FetchHive)]);
        let err = gateway
            .resolve(&target(Some("fh"), WorkflowRef::Slug("s".into())))
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::InvalidArgument);
        assert_eq!(err.violations[0].field, "target.slug");
    }

    #[test]
    fn unknown_provider_and_missing_dialect_are_not_found() {
        let gateway = Gateway::new(vec![fake("fh", ProviderKind::FetchHive)]);
        let err = gateway
            .resolve(&target(Some("nope"), WorkflowRef::Slug("s".into())))
            .unwrap_err();
        assert_eq!(
            (err.class, err.reason.as_str()),
            (ErrorClass::NotFound, "UNKNOWN_PROVIDER")
        );
        let err = gateway
            .resolve(&target(None, WorkflowRef::WorkflowId("wf".into())))
            .unwrap_err();
        assert_eq!(err.reason, "NO_PROVIDER_FOR_DIALECT");
    }

    #[test]
    fn invalid_invocations_never_reach_the_provider() {
        let provider = fake("kn", ProviderKind::Knouds);
        let gateway = Gateway::new(vec![provider.clone()]);
        let mut invocation = Invocation::new(WorkflowRef::Slug("BadX".into()));
        invocation
            .metadata
            .insert("nested".into(), serde_json::json!({"a": 1}));
        let err = futures::executor::block_on(gateway.invoke(
            &target(None, invocation.workflow.clone()),
            &invocation,
            Deadline::NONE,
        ))
        .unwrap_err();
        let fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, vec!["metadata.nested", "target.slug"]);
        assert_eq!(provider.calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn schema_violations_join_the_other_violations_and_nothing_is_sent() {
        use crate::{DeclaredSchemas, SchemaCacheSettings, SchemaField, ValueType};
        let provider = fake("kn", ProviderKind::Knouds);
        let mut declared = DeclaredSchemas::new();
        declared.insert(
            "kn",
            "flow",
            WorkflowSchema::new(vec![
                SchemaField::new("text", ValueType::String).required(),
                SchemaField::new("n", ValueType::Number),
            ]),
        );
        let gateway = Gateway::new(vec![provider.clone()])
            .with_schemas(SchemaCatalog::new(SchemaCacheSettings::default(), declared));
        let mut invocation = Invocation::new(WorkflowRef::Slug("flow".into()));
        invocation.inputs.insert("n".into(), serde_json::json!("7"));
        invocation
            .metadata
            .insert("nested".into(), serde_json::json!([1]));
        let err = futures::executor::block_on(gateway.invoke(
            &target(None, invocation.workflow.clone()),
            &invocation,
            Deadline::NONE,
        ))
        .unwrap_err();
        let mut fields: Vec<_> = err.violations.iter().map(|v| v.field.as_str()).collect();
        fields.sort_unstable();
        assert_eq!(fields, vec!["inputs.n", "inputs.text", "metadata.nested"]);
        assert_eq!(provider.calls.load(Ordering::SeqCst), 0);

        invocation.metadata.clear();
        invocation.inputs.insert("n".into(), serde_json::json!(7));
        invocation
            .inputs
            .insert("text".into(), serde_json::json!("t"));
        futures::executor::block_on(gateway.invoke(
            &target(None, invocation.workflow.clone()),
            &invocation,
            Deadline::NONE,
        ))
        .unwrap();
        assert_eq!(provider.calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_dialect_without_schemas_answers_failed_precondition() {
        let gateway = Gateway::new(vec![fake("fh", ProviderKind::FetchHive)]);
        let workflow = WorkflowRef::Deployment {
            name: "summarize".into(),
            variant: Some("default".into()),
        };
        let err = futures::executor::block_on(
            gateway.workflow_schema(&target(None, workflow), Deadline::NONE),
        )
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::FailedPrecondition);
        assert_eq!(err.reason, "SCHEMA_NOT_DECLARED");
        let precondition = err.precondition.as_ref().unwrap();
        assert_eq!(precondition.kind, "SCHEMA");
        assert!(
            precondition
                .description
                .contains("[providers.fh.workflows.\"summarize/default\"]"),
            "{precondition:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_deadline_sends_nothing_and_says_so() {
        let provider = fake("kn", ProviderKind::Knouds);
        let gateway = Gateway::new(vec![provider.clone()]);
        let invocation = Invocation::new(WorkflowRef::Slug("ok".into()));
        let deadline = Deadline::after(std::time::Duration::from_millis(5));
        tokio::time::advance(std::time::Duration::from_millis(10)).await;
        let err = gateway
            .invoke(
                &target(None, invocation.workflow.clone()),
                &invocation,
                deadline,
            )
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::DeadlineExceeded);
        assert!(err.never_sent);
        assert_eq!(provider.calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn run_ids_carry_provider_and_upstream_id() {
        let gateway = Gateway::new(vec![fake("kn", ProviderKind::Knouds)]);
        let invocation = Invocation::new(WorkflowRef::Slug("ok".into()));
        let invoked = futures::executor::block_on(gateway.invoke(
            &target(None, invocation.workflow.clone()),
            &invocation,
            Deadline::NONE,
        ))
        .unwrap();
        assert_eq!(invoked.run_id, RunId::new("kn", "up-1"));
    }
}
