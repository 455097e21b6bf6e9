//! `plan` resolves every spec the repository ships, and its cost estimates follow what each
//! phase of a cell sends: the prompt of a round that shows no demonstration is priced without
//! any.

mod common;

use freeal_bench::config::layer;
use freeal_bench::methods::{Estimate, build};
use freeal_bench::plan::plan;
use freeal_bench::run::executor::load_dataset;

/// The estimate of the only cell of a FreeAL spec on the toy dataset with `settings`.
fn freeal_estimate(settings: &str) -> Estimate {
    let dir = tempfile::tempdir().unwrap();
    let dataset = common::toy_dataset(dir.path());
    let spec = common::write(
        dir.path(),
        "spec.toml",
        &format!(
            "dataset = \"{}\"\n[experiment]\nname = \"e\"\n[methods.f]\nkind = \"freeal\"\n\
             {settings}\n[llm]\nprompts = \"prompts/sst2.toml\"\n[sweep]\nmethod = [\"f\"]\n",
            dataset.display()
        ),
    );
    let plan = plan(&layer(&spec, &[]).unwrap()).unwrap();
    let cell = &plan.cells[0];
    build(&cell.config.method).estimate(cell, &load_dataset(cell).unwrap())
}

#[test]
fn zero_shot_round_0_is_priced_without_demonstrations() {
    let zero_shot = |knn: usize, per_class: usize| {
        freeal_estimate(&format!(
            "initial = \"zero_shot\"\nrounds = 0\nknn = {knn}\ndemos_per_class = {per_class}"
        ))
    };
    // 400 pool sentences (600 less the third cut for test), each asked once.
    assert_eq!(zero_shot(10, 5).llm_calls, 400);
    // Neither demonstration count applies to a zero-shot round 0 with no refinery (the
    // estimate used to price every call with the larger of the two).
    assert_eq!(zero_shot(10, 5), zero_shot(1, 1));
    assert_eq!(zero_shot(1, 1), zero_shot(20, 20));
    let zero_shot = |knn: usize| zero_shot(knn, 5);
    let generated = |knn: usize| {
        freeal_estimate(&format!(
            "initial = \"generated\"\ngenerated_per_class = 2\nrounds = 0\nknn = {knn}"
        ))
    };
    assert_eq!(
        generated(10).llm_calls,
        404,
        "4 demonstrations written, 400 labels"
    );
    assert!(generated(10).llm_prompt_tokens > 2 * zero_shot(10).llm_prompt_tokens);
    assert!(generated(10).llm_prompt_tokens > generated(1).llm_prompt_tokens);
    // A refinery round asks again with demos_per_class x 2 demonstrations each.
    let refined = freeal_estimate("initial = \"zero_shot\"\nrounds = 1\ndemos_per_class = 3");
    assert_eq!(refined.llm_calls, 800);
    assert!(refined.llm_prompt_tokens > 3 * zero_shot(10).llm_prompt_tokens);
}

#[test]
fn every_committed_spec_plans() {
    // A spec quoted in BENCHMARKS.md or the README must still run after a key, method or
    // dataset changes; planning it resolves all three without running a cell.
    let specs: Vec<_> = common::files_under(&common::root().join("experiments"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    assert!(specs.len() > 20, "{specs:?}");
    for spec in specs {
        let out = common::bench(&["plan", spec.to_str().unwrap()]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}",
            spec.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let cells = said.lines().filter(|l| l.contains(" cells) -> ")).count();
        assert_eq!(cells, 1, "{}: {said}", spec.display());
        assert!(said.contains("\ntotal: "), "{}: {said}", spec.display());
    }
}
