//! Range checks that types alone cannot express; each problem is reported as (key, message).

use super::spec::{MethodSpec, Spec};

/// Returns every out-of-range value in `spec` as (dotted key, message naming the allowed range).
pub fn validate(spec: &Spec) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, key: &str, message: String| {
        if !ok {
            problems.push((key.to_string(), message));
        }
    };
    let slm = &spec.slm;
    check(
        (1..=512).contains(&slm.max_len),
        "slm.max_len",
        format!("must be in 1..=512, got {}", slm.max_len),
    );
    check(
        slm.batch_size >= 1,
        "slm.batch_size",
        "must be at least 1".into(),
    );
    check(
        slm.eval_batch_size >= 1,
        "slm.eval_batch_size",
        "must be at least 1".into(),
    );
    check(slm.epochs >= 1, "slm.epochs", "must be at least 1".into());
    check(
        slm.lr > 0.0 && slm.lr.is_finite(),
        "slm.lr",
        format!("must be a positive number, got {}", slm.lr),
    );
    check(
        slm.weight_decay >= 0.0,
        "slm.weight_decay",
        format!("must be >= 0, got {}", slm.weight_decay),
    );
    check(
        (0.0..1.0).contains(&slm.warmup_ratio),
        "slm.warmup_ratio",
        format!("must be in [0, 1), got {}", slm.warmup_ratio),
    );
    check(
        slm.grad_clip >= 0.0,
        "slm.grad_clip",
        format!("must be >= 0 (0 = off), got {}", slm.grad_clip),
    );
    check(
        (0.0..1.0).contains(&slm.dropout),
        "slm.dropout",
        format!("must be in [0, 1), got {}", slm.dropout),
    );
    check(
        !slm.model.trim().is_empty(),
        "slm.model",
        "must name a model or a model directory".into(),
    );
    if let Some(init) = &slm.random_init {
        check(
            init.layers >= 1 && init.hidden >= 1 && init.intermediate >= 1,
            "slm.random_init",
            "layers, hidden and intermediate must be at least 1".into(),
        );
        check(
            init.heads >= 1 && init.hidden.is_multiple_of(init.heads.max(1)),
            "slm.random_init.heads",
            format!(
                "must be at least 1 and divide hidden ({}), got {}",
                init.hidden, init.heads
            ),
        );
    }
    check(spec.run.jobs >= 1, "run.jobs", "must be at least 1".into());
    check(
        !spec.experiment.name.trim().is_empty() && !spec.experiment.name.contains(['/', '\\']),
        "experiment.name",
        "must be a non-empty name without path separators".into(),
    );
    check(
        !spec.dataset.trim().is_empty(),
        "dataset",
        "must name a dataset (datasets/NAME/dataset.toml) or a dataset TOML file".into(),
    );
    check(
        spec.methods.contains_key(&spec.method),
        "method",
        format!(
            "`{}` is not defined; defined methods: {}",
            spec.method,
            spec.methods.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    );
    for (name, method) in &spec.methods {
        match method {
            MethodSpec::Supervised { fraction } => check(
                *fraction > 0.0 && *fraction <= 1.0,
                &format!("methods.{name}.fraction"),
                format!("must be in (0, 1], got {fraction}"),
            ),
        }
    }
    problems
}
