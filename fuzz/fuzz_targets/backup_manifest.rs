//! Backup manifests and backup_label files are read back from the repository, which another
//! writer (or damage) may have changed: parsing must never panic, and whatever a manifest
//! accepts must be safe to join to a restore target.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walarch_core::backup::{BackupLabel, Manifest, safe_relative_path};

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = Manifest::from_json(data) {
        for path in manifest.files.iter().map(|f| &f.path).chain(manifest.directories.iter().map(|d| &d.path)) {
            let clean = safe_relative_path(path).expect("accepted paths are safe");
            assert!(clean.is_relative());
            assert!(clean.components().all(|c| matches!(c, std::path::Component::Normal(_))));
        }
        let _ = (manifest.start_segment(), manifest.stop_segment());
        let again = Manifest::from_json(&manifest.to_json()).expect("a manifest re-reads");
        assert_eq!(again, manifest);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = BackupLabel::parse(text);
        if let Ok(clean) = safe_relative_path(text) {
            assert!(clean.components().all(|c| matches!(c, std::path::Component::Normal(_))));
        }
    }
});
