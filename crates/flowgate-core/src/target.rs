//! Which workflow a call is for.

use std::fmt;

/// How a dialect addresses workflows: the field of the target's `oneof`
/// (`deployment`, `workflow_id` or `slug`) a caller names one with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Addressing {
    /// `target.deployment`: a deployment and an optional variant.
    Deployment,
    /// `target.workflow_id`: an opaque workflow id.
    WorkflowId,
    /// `target.slug`: a slug.
    Slug,
}

impl Addressing {
    /// The target field (`deployment`, `workflow_id`, `slug`).
    pub fn target_field(self) -> &'static str {
        match self {
            Self::Deployment => "deployment",
            Self::WorkflowId => "workflow_id",
            Self::Slug => "slug",
        }
    }
}

/// The REST dialect a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Fetch Hive: deployment + variant, Bearer key.
    FetchHive,
    /// AI Tutor: workflow id, flat variables body, Bearer key.
    AiTutor,
    /// Knouds: slug, `x-api-key`, capability-scoped keys.
    Knouds,
    /// A dialect outside the built-in three, registered in code with the
    /// providers crate's dialect registry (configuration files name only
    /// the built-in kinds).
    Other {
        /// Its name (logs, metrics, `ErrorInfo.domain`).
        name: &'static str,
        /// How it addresses workflows.
        addressing: Addressing,
    },
}

impl ProviderKind {
    /// Every kind, in a stable order.
    pub const ALL: [ProviderKind; 3] = [Self::FetchHive, Self::AiTutor, Self::Knouds];

    /// The name used in configuration and in `ErrorInfo.domain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FetchHive => "fetchhive",
            Self::AiTutor => "aitutor",
            Self::Knouds => "knouds",
            Self::Other { name, .. } => name,
        }
    }

    /// Parses a configuration name (built-in kinds only).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// How this dialect addresses workflows.
    pub fn addressing(self) -> Addressing {
        match self {
            Self::FetchHive => Addressing::Deployment,
            Self::AiTutor => Addressing::WorkflowId,
            Self::Knouds => Addressing::Slug,
            Self::Other { addressing, .. } => addressing,
        }
    }

    /// The field of the target's `oneof` this dialect addresses workflows by.
    pub fn target_field(self) -> &'static str {
        self.addressing().target_field()
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A workflow, in the shape its dialect addresses it by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkflowRef {
    /// Fetch Hive deployment and variant (`None`: the provider's default).
    Deployment {
        /// The deployment key.
        name: String,
        /// The variant, when the caller named one.
        variant: Option<String>,
    },
    /// AI Tutor workflow id.
    WorkflowId(String),
    /// Knouds slug.
    Slug(String),
}

impl WorkflowRef {
    /// The built-in dialect that addresses workflows this way.
    pub fn kind(&self) -> ProviderKind {
        match self {
            Self::Deployment { .. } => ProviderKind::FetchHive,
            Self::WorkflowId(_) => ProviderKind::AiTutor,
            Self::Slug(_) => ProviderKind::Knouds,
        }
    }

    /// The shape of this reference (which target field names it).
    pub fn addressing(&self) -> Addressing {
        match self {
            Self::Deployment { .. } => Addressing::Deployment,
            Self::WorkflowId(_) => Addressing::WorkflowId,
            Self::Slug(_) => Addressing::Slug,
        }
    }

    /// A short label for logs and spans (`deployment/variant`, id or slug).
    pub fn label(&self) -> String {
        self.to_string()
    }
}

/// Writes the label (see [`WorkflowRef::label`]) without allocating.
impl fmt::Display for WorkflowRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Deployment {
                name,
                variant: Some(variant),
            } => write!(f, "{name}/{variant}"),
            Self::Deployment {
                name,
                variant: None,
            } => f.write_str(name),
            Self::WorkflowId(id) => f.write_str(id),
            Self::Slug(slug) => f.write_str(slug),
        }
    }
}

/// A provider (by configured name, optional) and a workflow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkflowTarget {
    /// Configured provider name; `None` lets the gateway pick the single
    /// provider of the workflow's dialect.
    pub provider: Option<String>,
    /// The workflow.
    pub workflow: WorkflowRef,
}
