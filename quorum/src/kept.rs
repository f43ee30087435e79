//! Small facts a daemon keeps beside its raft log across restarts, one JSON file each:
//! written whole to a temporary file, synced, and renamed into place, so a crash leaves
//! the old file or the new one, never half of one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::warn;

/// One kept fact at `path`.
pub struct Kept {
    path: PathBuf,
}

impl Kept {
    pub fn at(path: PathBuf) -> Kept {
        Kept { path }
    }

    /// The fact, if there is a readable one. A missing file is no fact; an unreadable or
    /// corrupt one is said (with the file) and treated the same.
    pub fn load<T: DeserializeOwned>(&self) -> Option<T> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot read a kept state file; ignoring it");
                return None;
            }
        };
        serde_json::from_str(&text)
            .inspect_err(
                |e| warn!(path = %self.path.display(), error = %e, "ignoring a corrupt kept state file"),
            )
            .ok()
    }

    /// Keep `value`, durably once this returns Ok.
    pub fn save<T: Serialize>(&self, value: &T) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        // The rename itself is durable once the directory is synced.
        std::fs::File::open(dir)?.sync_all()
    }

    /// Forget the fact; a file already gone is fine.
    pub fn remove(&self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_found_again_forgotten_and_a_corrupt_file_is_no_fact() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Kept::at(dir.path().join("sub").join("fact.json"));
        assert_eq!(kept.load::<Vec<u32>>(), None, "nothing kept yet");
        kept.save(&vec![1u32, 2]).unwrap();
        assert_eq!(kept.load::<Vec<u32>>(), Some(vec![1, 2]));
        kept.save(&vec![3u32]).unwrap();
        assert_eq!(kept.load::<Vec<u32>>(), Some(vec![3]), "replaced whole");
        std::fs::write(kept.path(), b"[3, ").unwrap();
        assert_eq!(kept.load::<Vec<u32>>(), None, "corrupt");
        kept.remove().unwrap();
        kept.remove().unwrap();
        assert_eq!(kept.load::<Vec<u32>>(), None, "forgotten");
    }
}
