//! Routing invocations to providers.

use std::sync::Arc;

use crate::{
    Deadline, ErrorClass, FieldViolation, GatewayError, Invocation, Provider, RunId, RunOutcome,
    WorkflowTarget,
};

/// The engine's front door: the configured providers and the rules that pick
/// one for a target.
#[derive(Debug, Clone)]
pub struct Gateway {
    providers: Vec<Arc<dyn Provider>>,
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

impl Gateway {
    /// A gateway over `providers` (names are unique: configuration checks it).
    pub fn new(providers: Vec<Arc<dyn Provider>>) -> Self {
        Self { providers }
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

    /// Picks the provider for `target`: the named one, which must speak the
    /// workflow's dialect, or else the only provider that does.
    pub fn resolve(&self, target: &WorkflowTarget) -> Result<&Arc<dyn Provider>, GatewayError> {
        let kind = target.workflow.kind();
        if let Some(name) = target.provider.as_deref() {
            let provider = self.provider(name).ok_or_else(|| {
                GatewayError::not_found(
                    "UNKNOWN_PROVIDER",
                    "flowgate.provider",
                    name,
                    format!("no provider named {name:?} is configured"),
                )
            })?;
            if provider.kind() != kind {
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
        let mut candidates = self.providers.iter().filter(|p| p.kind() == kind);
        match (candidates.next(), candidates.next()) {
            (Some(only), None) => Ok(only),
            (None, _) => Err(GatewayError::not_found(
                "NO_PROVIDER_FOR_DIALECT",
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
                    .filter(|p| p.kind() == kind)
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

    /// Resolves the provider and runs every pre-flight check; all
    /// violations come back in one error.
    pub fn prepare(
        &self,
        target: &WorkflowTarget,
        invocation: &Invocation,
    ) -> Result<&Arc<dyn Provider>, GatewayError> {
        let provider = self.resolve(target)?;
        let mut violations = invocation.validate();
        violations.extend(provider.validate(invocation));
        if violations.is_empty() {
            Ok(provider)
        } else {
            Err(GatewayError::invalid_argument(violations))
        }
    }

    /// Validates and runs one invocation. Nothing is sent upstream unless
    /// every check passed; all violations come back in one error.
    pub async fn invoke(
        &self,
        target: &WorkflowTarget,
        invocation: &Invocation,
        deadline: Deadline,
    ) -> Result<Invoked, GatewayError> {
        let provider = self.prepare(target, invocation)?;
        if deadline.is_expired() {
            return Err(GatewayError::new(
                ErrorClass::DeadlineExceeded,
                "DEADLINE_EXCEEDED",
                "the caller's deadline passed before the call was sent upstream",
            ));
        }
        let outcome = provider.invoke(invocation, deadline).await?;
        let run_id = match outcome.upstream_run_id.as_deref() {
            Some(upstream) => RunId::new(provider.name(), upstream),
            None => RunId::local(provider.name()),
        };
        Ok(Invoked {
            provider: Arc::clone(provider),
            run_id,
            outcome,
        })
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
