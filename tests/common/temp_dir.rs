//! A directory for a test's files (certificates, configurations, logs),
//! removed when dropped.

use std::path::{Path, PathBuf};

/// `<tmp>/flowgate-<name>-<pid>`, created empty, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("flowgate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// Writes `text` to the file `name` in it; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A path as a TOML string (quoted and escaped).
pub fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}
