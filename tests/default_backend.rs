//! The binary's default backend (`auto`) end to end: it probes for a GPU adapter and, on a
//! machine without one (CI: only Mesa's software Vulkan), runs on the CPU without printing
//! errors it did not have.

mod common;

use std::process::Command;

use common::root;
use freeal_bench::slm::device::cpu_vector_isa;

#[test]
fn auto_backend_probes_quietly_on_a_headless_machine() {
    let _ = common::minilm_dir();
    let results = tempfile::tempdir().unwrap();
    let set = format!("run.results_dir=\"{}\"", results.path().display());
    // No desktop session, as on CI and servers: Mesa's device-select layer would ask libwayland
    // for a display and print "error: XDG_RUNTIME_DIR is invalid" on every run.
    let out = Command::new(env!("CARGO_BIN_EXE_freeal-bench"))
        .args(["run", "tests/fixtures/specs/tiny.toml", "--set", &set])
        .args(["--only", "sst2-supervised-s1"])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .env_remove("MESA_VK_DEVICE_SELECT")
        .current_dir(root())
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{stderr}");
    assert!(
        !stderr.lines().any(|line| line.starts_with("error")),
        "{stderr}"
    );
    // The device the run reports is the one the cell records.
    let cells = results.path().join("tiny/cells");
    let cell = std::fs::read_dir(&cells).unwrap().next().unwrap().unwrap();
    let device = std::fs::read_to_string(cell.path().join("device.txt")).unwrap();
    assert!(
        stderr.contains(&format!("device: {device}")),
        "{device}: {stderr}"
    );
}

/// Runs the tiny spec's supervised cell with `backend` (as `--backend` spells it) and returns
/// the device its cell records.
fn recorded_device(backend: &str) -> String {
    let results = tempfile::tempdir().unwrap();
    let set = format!("run.results_dir=\"{}\"", results.path().display());
    let out = common::bench(&[
        "run",
        "tests/fixtures/specs/tiny.toml",
        "--set",
        &set,
        "--only",
        "sst2-supervised-s1",
        "--backend",
        backend,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cell = std::fs::read_dir(results.path().join("tiny/cells"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::read_to_string(cell.path().join("device.txt")).unwrap()
}

#[test]
fn the_cpu_backends_record_whether_the_fused_kernels_ran_and_on_which_instructions() {
    let _ = common::minilm_dir();
    let isa = cpu_vector_isa();
    assert_eq!(
        recorded_device("cpu"),
        format!("cpu (burn flex, fused kernels, {isa})")
    );
    // Spelled as in TOML (`run.backend = "cpu_unfused"`), or as clap would.
    assert_eq!(
        recorded_device("cpu_unfused"),
        format!("cpu (burn flex, {isa})")
    );
    assert_eq!(
        recorded_device("cpu-unfused"),
        format!("cpu (burn flex, {isa})")
    );
}
