//! Configuration errors.
//!
//! Every error names the object it was found in, the field path inside that object and
//! the problem, so that `apigate validate`, a rejected reload and (later) an object's
//! `status` condition all tell the operator exactly what to fix. Each problem has a
//! stable, low-cardinality label for the `apigate_config_errors_total` metric.

use std::fmt;

/// Which object an error belongs to.
///
/// Before a document is parsed far enough to know its kind and name, the document's
/// position in its source stands in for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectRef {
    /// A parsed object: kind, optional namespace, name.
    Named {
        /// `kind` of the object, e.g. `ApiServerRoute`.
        kind: String,
        /// Namespace, empty for cluster-scoped objects.
        namespace: String,
        /// `metadata.name`.
        name: String,
    },
    /// A document that could not be identified (e.g. malformed YAML).
    Document {
        /// Where the document came from (file path).
        source: String,
        /// Zero-based index of the document in the source.
        index: usize,
    },
    /// The configuration as a whole (e.g. "no GatewayConfig").
    Config,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectRef::Named {
                kind,
                namespace,
                name,
            } if namespace.is_empty() => write!(f, "{kind} {name}"),
            ObjectRef::Named {
                kind,
                namespace,
                name,
            } => write!(f, "{kind} {namespace}/{name}"),
            ObjectRef::Document { source, index } => write!(f, "document #{index} of {source}"),
            ObjectRef::Config => write!(f, "configuration"),
        }
    }
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The text is not valid YAML or does not fit the schema (wrong type, unknown field).
    #[error("{0}")]
    Syntax(String),
    /// `apiVersion`/`kind` is not one apigate knows.
    #[error("unsupported apiVersion/kind {0:?}; expected apiVersion apigate.dev/v1alpha1 with kind GatewayConfig or ApiServerRoute")]
    UnknownKind(String),
    /// A required value is missing or empty.
    #[error("is required: {0}")]
    Missing(&'static str),
    /// A value is present but not acceptable.
    #[error("invalid value {value:?}: {reason}")]
    Invalid {
        /// The offending value as written.
        value: String,
        /// Why it is invalid and what would be valid.
        reason: String,
    },
    /// Two objects claim the same identity (hostname, object name).
    #[error("{value:?} is already used by {other}")]
    Conflict {
        /// The contested value.
        value: String,
        /// The object that already holds it.
        other: String,
    },
    /// A referenced file could not be read.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// Path as resolved by the source.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// Certificate or key material is malformed or inconsistent.
    #[error("{0}")]
    Tls(String),
}

impl Problem {
    /// Stable metric label for this kind of problem.
    pub fn label(&self) -> &'static str {
        match self {
            Problem::Syntax(_) => "syntax",
            Problem::UnknownKind(_) => "unknown_kind",
            Problem::Missing(_) => "missing",
            Problem::Invalid { .. } => "invalid",
            Problem::Conflict { .. } => "conflict",
            Problem::Unreadable { .. } => "unreadable",
            Problem::Tls(_) => "tls",
        }
    }
}

/// One configuration error: object + field + problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{object}: {field}: {problem}")]
pub struct ConfigError {
    /// The object the error was found in.
    pub object: ObjectRef,
    /// Dotted field path inside the object, e.g. `spec.backends.static[1]`.
    pub field: String,
    /// What is wrong.
    pub problem: Problem,
}

impl ConfigError {
    /// Shorthand constructor.
    pub fn new(object: ObjectRef, field: impl Into<String>, problem: Problem) -> Self {
        ConfigError {
            object,
            field: field.into(),
            problem,
        }
    }
}

/// Collects errors while validating, so that one run reports every problem at once
/// instead of making the operator fix them one by one.
#[derive(Debug, Default)]
pub struct Errors(Vec<ConfigError>);

impl Errors {
    /// Record one error.
    pub fn push(&mut self, object: &ObjectRef, field: impl Into<String>, problem: Problem) {
        self.0
            .push(ConfigError::new(object.clone(), field, problem));
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of errors recorded so far; compare before and after a step to see
    /// whether it added any.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Take the recorded errors.
    pub fn into_vec(self) -> Vec<ConfigError> {
        self.0
    }

    /// Append errors produced elsewhere.
    pub fn extend(&mut self, other: impl IntoIterator<Item = ConfigError>) {
        self.0.extend(other);
    }
}
