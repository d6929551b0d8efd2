//! Configuration sources: where objects and the files they reference come from.
//!
//! Two sources: a YAML file (the embedded default) and the Kubernetes API
//! ([`kubernetes`]). A source turns its input into [`Inputs`], the plain data that [`crate::compile`]
//! turns into a snapshot. Sources do all the I/O; compile does none.

mod file;
pub mod kubernetes;
mod parse;

pub(crate) use file::referenced_files;
pub use file::{load_file, FileSource};
pub use parse::{parse_documents, render_documents};

use std::collections::BTreeMap;

use crate::model::Object;

/// Referenced file contents keyed by the path as written.
pub type Files = BTreeMap<String, Result<Vec<u8>, String>>;

/// Everything compile needs: the objects, and the bytes of every file they reference.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Parsed objects in source order.
    pub objects: Vec<Object>,
    /// Referenced files keyed by the path as written in the object; a read error is
    /// kept as its message so compile can report it against the field that named it.
    pub files: Files,
}
