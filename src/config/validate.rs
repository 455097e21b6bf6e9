//! Range checks that types alone cannot express; each problem is reported as (key, message).

use super::spec::{LlmBackend, MethodSpec, Spec};
use crate::llm::demos::DemoChoice;
use crate::methods::freeal::config::SelfTraining;

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
    if let Some(rate) = slm.attention_dropout {
        check(
            (0.0..1.0).contains(&rate),
            "slm.attention_dropout",
            format!("must be in [0, 1), got {rate}"),
        );
    }
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
        spec.run.epoch_checkpoint_minutes.is_finite() && spec.run.epoch_checkpoint_minutes >= 0.0,
        "run.epoch_checkpoint_minutes",
        format!(
            "must be a number of minutes, 0 or more (0 = every epoch), got {}",
            spec.run.epoch_checkpoint_minutes
        ),
    );
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
            MethodSpec::Icl { demos, k, .. } => check(
                *demos == DemoChoice::None || *k >= 1,
                &format!("methods.{name}.k"),
                format!("must be at least 1 with demos = {demos:?} (lower-case), got {k}"),
            ),
            MethodSpec::ActiveLearning(a) => {
                for (field, value) in [("budget", a.budget), ("initial", a.initial)] {
                    check(
                        value > 0.0 && value.is_finite(),
                        &format!("methods.{name}.{field}"),
                        format!(
                            "must be a positive fraction of the pool (<= 1) or a count, got {value}"
                        ),
                    );
                }
                check(
                    a.rounds >= 1,
                    &format!("methods.{name}.rounds"),
                    "must be at least 1".into(),
                );
            }
            MethodSpec::Freeal(f) => {
                let key = |field: &str| format!("methods.{name}.{field}");
                check(
                    f.r_percent > 0.0 && f.r_percent <= 100.0,
                    &key("r_percent"),
                    format!("must be in (0, 100], got {}", f.r_percent),
                );
                check(
                    f.label_fraction > 0.0 && f.label_fraction <= 1.0,
                    &key("label_fraction"),
                    format!("must be in (0, 1], got {}", f.label_fraction),
                );
                check(
                    (0.0..=1.0).contains(&f.clean_threshold),
                    &key("clean_threshold"),
                    format!("must be in [0, 1], got {}", f.clean_threshold),
                );
                check(
                    f.mixup_alpha > 0.0,
                    &key("mixup_alpha"),
                    format!("must be positive, got {}", f.mixup_alpha),
                );
                check(
                    f.temperature > 0.0,
                    &key("temperature"),
                    format!("must be positive, got {}", f.temperature),
                );
                check(
                    // Only for the cell's own method: `--set slm.epochs=1` on a supervised
                    // cell must not trip over the default freeal settings.
                    *name != spec.method
                        || f.self_training == SelfTraining::Plain
                        || f.warmup_epochs < slm.epochs,
                    &key("warmup_epochs"),
                    format!(
                        "must be below slm.epochs ({}) or the clean/noisy split never runs, got {}",
                        slm.epochs, f.warmup_epochs
                    ),
                );
                check(
                    f.rampup_epochs >= 0.0,
                    &key("rampup_epochs"),
                    format!("must be >= 0, got {}", f.rampup_epochs),
                );
                for (field, value) in [
                    ("medoids_per_class", f.medoids_per_class),
                    ("demos_per_class", f.demos_per_class),
                    ("knn", f.knn),
                    ("generated_per_class", f.generated_per_class),
                    ("imitate", f.imitate),
                ] {
                    check(
                        value >= 1,
                        &key(field),
                        format!("must be at least 1, got {value}"),
                    );
                }
            }
        }
    }
    let llm = &spec.llm;
    check(
        llm.n_ctx >= 256,
        "llm.n_ctx",
        format!("must be at least 256, got {}", llm.n_ctx),
    );
    check(
        llm.max_tokens >= 1,
        "llm.max_tokens",
        "must be at least 1".into(),
    );
    check(
        (1..=20).contains(&llm.top_logprobs),
        "llm.top_logprobs",
        format!(
            "must be in 1..=20 (OpenAI's limit), got {}",
            llm.top_logprobs
        ),
    );
    check(
        (0.0..=1.0).contains(&llm.simulated.accuracy),
        "llm.simulated.accuracy",
        format!("must be in [0, 1], got {}", llm.simulated.accuracy),
    );
    check(
        llm.backend != LlmBackend::Replay || llm.replay.is_some(),
        "llm.replay",
        "backend = \"replay\" needs [llm.replay] with file (and label/text columns)".into(),
    );
    check(
        llm.backend != LlmBackend::Http || llm.base_url.starts_with("http"),
        "llm.base_url",
        format!("must be an http(s) URL, got `{}`", llm.base_url),
    );
    let run = &spec.run.llm;
    check(
        run.concurrency >= 1,
        "run.llm.concurrency",
        "must be at least 1".into(),
    );
    check(
        run.timeout_s > 0.0 && run.timeout_s.is_finite(),
        "run.llm.timeout_s",
        format!(
            "must be a positive number of seconds, got {}",
            run.timeout_s
        ),
    );
    check(
        run.backoff_s >= 0.0 && run.backoff_s.is_finite(),
        "run.llm.backoff_s",
        format!("must be >= 0, got {}", run.backoff_s),
    );
    problems
}
