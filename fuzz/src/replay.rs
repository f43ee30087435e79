//! Runs stored inputs through a target's checks without the fuzzer: the crashes kept
//! under fuzz/regressions/<target>/ and the seeds under fuzz/corpus/<target>/.

use std::path::{Path, PathBuf};

/// Every file under fuzz/regressions/`target` and fuzz/corpus/`target`, through `check`.
/// Returns how many there were. `fuzz_dir` is the repository's fuzz/ folder.
pub fn replay(fuzz_dir: &Path, target: &str, check: fn(&[u8])) -> usize {
    let mut files: Vec<PathBuf> = ["regressions", "corpus"]
        .iter()
        .filter_map(|kind| std::fs::read_dir(fuzz_dir.join(kind).join(target)).ok())
        .flatten()
        .map(|entry| entry.expect("a readable directory entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    for path in &files {
        let input = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // A failing check panics; this line names the input it failed on.
        eprintln!("checking {}", path.display());
        check(&input);
    }
    files.len()
}
