//! Two processes share one store: a child process grows the map far past the size the
//! parent mapped, and the parent's next read and write adopt the new size instead of
//! failing with `MDB_MAP_RESIZED`.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use varve_sidecar::{BlobHash, Payload, Sidecar, SidecarOptions};
use varve_testkit::bytes::pattern as blob;

const CHILD_ENV: &str = "VARVE_SIDECAR_MP_CHILD";

fn opts() -> SidecarOptions {
    SidecarOptions::default().initial_map_size(1 << 20)
}

#[test]
fn mp_child() {
    // Acts only when re-executed by `parent_adopts_a_map_grown_by_another_process`.
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let sc = Sidecar::open(Path::new(&dir), opts()).unwrap();
        sc.store(&blob(12 << 20, 1)).unwrap();
    }
}

#[test]
fn parent_adopts_a_map_grown_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let parent = Sidecar::open(dir.path(), opts()).unwrap();
    let small = blob(10_000, 2);
    parent.store(&small).unwrap();
    let map_before = parent.stats().unwrap().map_size;

    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "mp_child", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .status()
        .unwrap();
    assert!(status.success());

    // A read first: the child's blob lies beyond the parent's map.
    let big = blob(12 << 20, 1);
    let got = parent.read(&Payload::BlobRef(BlobHash::of(&big))).unwrap();
    assert!(got == big);
    assert!(parent.stats().unwrap().map_size > map_before);
    // Then writes and reads of the parent's own.
    let more = blob(3 << 20, 3);
    let p = parent.store(&more).unwrap();
    assert!(parent.read(&p).unwrap() == more);
    assert_eq!(
        parent
            .read(&Payload::BlobRef(BlobHash::of(&small)))
            .unwrap(),
        small
    );
    assert_eq!(parent.stats().unwrap().blobs, 3);
}
