//! `plan --emit slurm` without a cluster: the script's array covers exactly the pending cells,
//! carries the `[run.slurm]` resources and the `--set` overrides, and is valid bash. (The real
//! submission to a Slurm cluster is scripts/slurm-test.sh.)

mod common;

#[test]
fn emitted_array_has_one_task_per_pending_cell() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = common::toy_dataset(dir.path());
    let spec = common::write(
        dir.path(),
        "spec.toml",
        &format!(
            "dataset = \"{}\"\n[experiment]\nname = \"emit\"\n{}\n[run]\nresults_dir = \"{}\"\n\
             [run.slurm]\npartition = \"gpu\"\ngpus = 1\nextra = [\"--account=nlp\"]\n\
             [sweep]\nmethod = [\"supervised\"]\nseed = [1, 2, 3]\n",
            dataset.display(),
            common::tiny_slm_toml(),
            dir.path().join("results").display()
        ),
    );
    let spec_arg = spec.to_str().unwrap();
    let out = common::bench(&["plan", spec_arg, "--emit", "slurm", "--set", "slm.epochs=2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exp = dir.path().join("results/emit");
    let script = std::fs::read_to_string(exp.join("slurm/submit.sh")).unwrap();
    for line in [
        "#SBATCH --array=0-2",
        "#SBATCH --partition=gpu",
        "#SBATCH --gres=gpu:1",
        "#SBATCH --account=nlp",
        "--set slm.epochs=2",
    ] {
        assert!(script.contains(line), "{line} missing from\n{script}");
    }
    let tsv = std::fs::read_to_string(exp.join("slurm/cells.tsv")).unwrap();
    assert_eq!(tsv.lines().count(), 4, "header + 3 cells:\n{tsv}");
    let syntax = std::process::Command::new("bash")
        .args(["-n", exp.join("slurm/submit.sh").to_str().unwrap()])
        .status()
        .unwrap();
    assert!(syntax.success(), "bash -n rejects the script");
    // The plan files report needs are there before any task runs.
    for f in ["experiment.json", "plan.json", "rerun.txt"] {
        assert!(exp.join(f).is_file(), "{f}");
    }
    // One cell completes (run here): emitting again leaves it out.
    let first_id = tsv.lines().nth(1).unwrap().split('\t').nth(1).unwrap();
    let run = common::bench(&[
        "run-cell",
        spec_arg,
        "--cell",
        first_id,
        "--set",
        "slm.epochs=2",
    ]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    // Moved to a name an older version might have given it (the id is what identifies a
    // cell): emitting adopts it under its current name rather than submit it again.
    let cells = exp.join("cells");
    let current = std::fs::read_dir(&cells)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("records.json").is_file())
        .unwrap();
    let earlier = cells.join(format!("toy.toml-supervised-s1-{first_id}"));
    std::fs::rename(&current, &earlier).unwrap();
    let again = common::bench(&["plan", spec_arg, "--emit", "slurm", "--set", "slm.epochs=2"]);
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("2 array tasks"));
    let script = std::fs::read_to_string(exp.join("slurm/submit.sh")).unwrap();
    assert!(script.contains("#SBATCH --array=0-1") && !script.contains(first_id));
    assert!(current.join("records.json").is_file() && !earlier.exists());
}
