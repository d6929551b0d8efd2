//! Configuration sources: where objects and the files they reference come from.
//!
//! Two sources: a YAML file (the embedded default) and the Kubernetes API
//! ([`kubernetes`]). A source turns its input into [`Inputs`], the plain data that [`crate::compile()`]
//! turns into a snapshot. Sources do all the I/O; compile does none, and imports nothing
//! from here.

mod file;
pub mod kubernetes;

pub use file::{load_file, FileSource};

pub use crate::inputs::{Files, Inputs};
pub use crate::model::{parse_documents, render_documents};
