//! Which workflow a call is for.

use std::fmt;

/// The REST dialect a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Fetch Hive: deployment + variant, Bearer key.
    FetchHive,
    /// AI Tutor: workflow id, flat variables body, Bearer key.
    AiTutor,
    /// Knouds: slug, `x-api-key`, capability-scoped keys.
    Knouds,
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
        }
    }

    /// Parses a configuration name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The field of the target's `oneof` this dialect addresses workflows by.
    pub fn target_field(self) -> &'static str {
        match self {
            Self::FetchHive => "deployment",
            Self::AiTutor => "workflow_id",
            Self::Knouds => "slug",
        }
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
    /// The dialect that addresses workflows this way.
    pub fn kind(&self) -> ProviderKind {
        match self {
            Self::Deployment { .. } => ProviderKind::FetchHive,
            Self::WorkflowId(_) => ProviderKind::AiTutor,
            Self::Slug(_) => ProviderKind::Knouds,
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
