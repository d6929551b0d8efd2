//! The file source: one YAML file of objects plus the PEM files they reference.
//!
//! This is apigate's embedded default: no cluster is needed to run it. Relative paths in
//! objects are resolved against the directory of the configuration file, so a config
//! directory can be moved as a whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{parse_documents, Inputs};
use crate::error::{ConfigError, ObjectRef, Problem};
use crate::inputs::referenced_files;

/// A configuration file on disk.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    /// A source reading `path` each time [`FileSource::load`] is called.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSource { path: path.into() }
    }

    /// The configuration file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the file and every file it references.
    pub fn load(&self) -> Result<Inputs, Vec<ConfigError>> {
        load_file(&self.path)
    }

    /// The files the configuration references, resolved, without reading them: what a
    /// change watcher must look at besides the configuration file itself.
    pub fn referenced_paths(&self) -> Vec<PathBuf> {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return Vec::new();
        };
        let Ok(objects) = parse_documents(&text, "") else {
            return Vec::new();
        };
        let base = self.path.parent().unwrap_or(Path::new("."));
        objects
            .iter()
            .flat_map(referenced_files)
            .map(|p| base.join(p))
            .collect()
    }
}

/// Read a configuration file and every file its objects reference.
pub fn load_file(path: &Path) -> Result<Inputs, Vec<ConfigError>> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError::new(
            ObjectRef::Config,
            "",
            Problem::Unreadable {
                path: source.clone(),
                reason: e.to_string(),
            },
        )]
    })?;
    let objects = parse_documents(&text, &source)?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut inputs = Inputs {
        objects,
        ..Inputs::default()
    };
    let referenced: Vec<String> = inputs.objects.iter().flat_map(referenced_files).collect();
    for written in referenced {
        let resolved = base.join(&written);
        let content = std::fs::read(&resolved)
            .map(Arc::from)
            .map_err(|e| format!("{} ({})", e, resolved.display()));
        inputs.files.insert(written.into(), content);
    }
    Ok(inputs)
}
