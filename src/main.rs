//! The `freeal-bench` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use freeal_bench::config::{BackendChoice, LlmBackend, layer};
use freeal_bench::error::Error;
use freeal_bench::llm::prompt::render_plain;
use freeal_bench::methods::{CellContext, build};
use freeal_bench::plan::{Plan, plan, select};
use freeal_bench::progress::Progress;
use freeal_bench::report::{self, tables};
use freeal_bench::run::executor::{
    CellClaim, CellRun, EXIT_BUSY, EXIT_COMPLETE, ExecOptions, cell_dir, claim_cell,
    earlier_cell_dirs, execute, load_dataset, models_dir, preflight, restart_cell_log, run_claimed,
};
use freeal_bench::run::records::{CHECKPOINT_JSON, EPOCH_CHECKPOINT_JSON, read_cell_records};
use freeal_bench::run::{lock, slurm};
use freeal_bench::slm::device;

/// Reproduce FreeAL / LLMaAA experiments from a TOML spec.
#[derive(Parser)]
#[command(name = "freeal-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Spec to run (same as `freeal-bench run SPEC`).
    spec: Option<PathBuf>,
    #[command(flatten)]
    opts: SpecOpts,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every cell of a spec (complete cells are skipped), then write tables.
    Run {
        /// Experiment spec (TOML).
        spec: PathBuf,
        #[command(flatten)]
        opts: SpecOpts,
    },
    /// Dry run: list the cells and their estimated cost without running anything.
    Plan {
        /// Experiment spec (TOML).
        spec: PathBuf,
        /// Print the first prompt each LLM cell would send (k-NN demos need the encoder).
        #[arg(long)]
        show_prompt: bool,
        /// Write a job-array script for a cluster scheduler instead (one task per pending cell).
        #[arg(long, value_enum)]
        emit: Option<Emit>,
        #[command(flatten)]
        opts: SpecOpts,
    },
    /// Rebuild tables, plots and README.md from the records under a results directory; with a
    /// second directory, show what changed between the two instead.
    Report {
        /// `results/<experiment>` directory.
        dir: PathBuf,
        /// A second results directory to compare with the first (`report A B`).
        other: Option<PathBuf>,
        /// Metric to summarise (default: the experiment's `metric`).
        #[arg(long)]
        metric: Option<String>,
        /// Summarise this round instead of each cell's final round (printed, not written).
        #[arg(long)]
        round: Option<u32>,
        /// Also write every cell as an MLflow run under `<dir>/mlruns/`.
        #[arg(long)]
        mlflow: bool,
    },
    /// Run one cell (used by `--jobs` and by cluster job arrays).
    RunCell {
        /// Experiment spec (TOML).
        spec: PathBuf,
        /// Cell id (see `plan`).
        #[arg(long)]
        cell: String,
        /// Started by `--jobs`: quiet when the cell is busy or complete (its log is someone
        /// else's), exit 76 when complete, and empty the log once the cell is ours.
        #[arg(long, hide = true)]
        jobs_child: bool,
        #[command(flatten)]
        opts: SpecOpts,
    },
}

/// Schedulers `plan --emit` writes for.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Emit {
    /// A Slurm job array: `sbatch results/<exp>/slurm/submit.sh`.
    Slurm,
}

#[derive(Args, Clone, Default)]
struct SpecOpts {
    /// Override a key: `--set slm.epochs=2` (repeatable; highest priority).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Only cells whose name or id matches this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    only: Vec<String>,
    /// Cells run in parallel (overrides run.jobs).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    jobs: Option<u64>,
    /// Tensor backend (overrides run.backend).
    #[arg(long, value_enum)]
    backend: Option<BackendChoice>,
}

impl SpecOpts {
    /// `--jobs`/`--backend` become `--set`s so that they pass through the same layering.
    fn all_sets(&self) -> Vec<String> {
        let mut sets = self.sets.clone();
        if let Some(jobs) = self.jobs {
            sets.push(format!("run.jobs={jobs}"));
        }
        if let Some(backend) = self.backend {
            let name = match backend {
                BackendChoice::Auto => "auto",
                BackendChoice::Cpu => "cpu",
                BackendChoice::CpuUnfused => "cpu_unfused",
                BackendChoice::Wgpu => "wgpu",
                BackendChoice::Libtorch => "libtorch",
            };
            sets.push(format!("run.backend=\"{name}\""));
        }
        sets
    }
}

/// Prints a line on stdout; a reader that went away (`freeal-bench plan ... | head`) ends the
/// command quietly through `main` instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

fn load_plan(spec: &Path, opts: &SpecOpts) -> anyhow::Result<Plan> {
    let layered = layer(spec, &opts.all_sets())?;
    let plan = plan(&layered)?;
    for warning in &plan.warnings {
        eprintln!("{warning}");
    }
    Ok(plan)
}

fn cmd_plan(spec: &Path, show_prompt: bool, opts: &SpecOpts) -> anyhow::Result<()> {
    let plan = load_plan(spec, opts)?;
    let cells = select(plan.cells.clone(), &opts.only)?;
    for warning in preflight(&plan, &cells)? {
        eprintln!("{warning}");
    }
    out!(
        "experiment {} ({} of {} cells) -> {}",
        plan.experiment.name,
        cells.len(),
        plan.cells.len(),
        plan.results_dir().display()
    );
    out!(
        "{:<12} {:<44} {:>7} {:>6} {:>9} {:>11} {:>9}  status",
        "id",
        "cell",
        "train",
        "test",
        "llm_calls",
        "llm_tokens",
        "slm_steps"
    );
    let (mut calls, mut tokens, mut steps, mut dollars) = (0, 0, 0, 0.0);
    // A server model with no [prices] entry costs an unknown amount, not nothing.
    let mut unpriced = std::collections::BTreeSet::new();
    let earlier = earlier_cell_dirs(&plan);
    for cell in &cells {
        let dataset = load_dataset(cell)?;
        let estimate = build(&cell.config.method).estimate(cell, &dataset);
        calls += estimate.llm_calls;
        tokens += estimate.llm_prompt_tokens;
        steps += estimate.slm_steps;
        if let Some(llm) = &cell.config.llm {
            dollars += estimate.llm_prompt_tokens as f64 * llm.price.input_per_mtok / 1e6;
            if llm.spec.backend == LlmBackend::Http
                && llm.price.input_per_mtok == 0.0
                && estimate.llm_calls > 0
            {
                unpriced.insert(llm.spec.model.clone());
            }
        }
        // A cell recorded under an earlier name is what the next run adopts.
        let dir = earlier
            .get(&cell.id)
            .cloned()
            .unwrap_or_else(|| cell_dir(&plan, cell));
        let status = if read_cell_records(&dir, &cell.id).is_some() {
            "complete"
        } else if lock::holder(&dir).is_some() {
            "running"
        } else if dir.join(CHECKPOINT_JSON).exists() || dir.join(EPOCH_CHECKPOINT_JSON).exists() {
            "resumable"
        } else {
            "pending"
        };
        out!(
            "{:<12} {:<44} {:>7} {:>6} {:>9} {:>11} {:>9}  {}",
            cell.id,
            cell.name,
            dataset.train.len(),
            dataset.test.len(),
            estimate.llm_calls,
            estimate.llm_prompt_tokens,
            estimate.slm_steps,
            status
        );
    }
    out!(
        "total: {calls} LLM calls, ~{tokens} prompt tokens (~${dollars:.2} of input at \
         [prices], before cache hits), {steps} SLM steps"
    );
    if !unpriced.is_empty() {
        let models: Vec<String> = unpriced.into_iter().collect();
        out!(
            "note: no price for {} under [prices] (or a price of 0): the cost above leaves it \
             out; add [prices.\"{}\"] input_per_mtok = ... to count it",
            models.join(", "),
            models[0]
        );
    }
    if show_prompt {
        print_prompts(&plan, &cells)?;
    }
    Ok(())
}

fn cmd_emit_slurm(spec: &Path, opts: &SpecOpts) -> anyhow::Result<()> {
    let plan = load_plan(spec, opts)?;
    let cells = select(plan.cells.clone(), &opts.only)?;
    let binary = std::env::current_exe().context("locating the freeal-bench binary")?;
    let emitted = slurm::emit(&plan, &cells, &opts.all_sets(), &binary)?;
    if emitted.tasks == 0 {
        out!(
            "every selected cell of {} is complete; nothing to submit",
            plan.experiment.name
        );
    } else {
        out!(
            "{} array tasks (pending cells) -> sbatch {}\nthen: freeal-bench report {}",
            emitted.tasks,
            emitted.script.display(),
            plan.results_dir().display()
        );
    }
    Ok(())
}

fn print_prompts(plan: &Plan, cells: &[freeal_bench::plan::Cell]) -> anyhow::Result<()> {
    let mut device = None;
    for cell in cells.iter().filter(|c| c.config.llm.is_some()) {
        if device.is_none() {
            device = Some(device::select(plan.run.backend)?);
        }
        let (dev, _) = device.as_ref().expect("set above");
        let dataset = load_dataset(cell)?;
        let models = models_dir(plan);
        let ctx = CellContext {
            cell,
            dataset: &dataset,
            device: dev,
            models_dir: &models,
            progress: &Progress::hidden(),
            llm_run: &plan.run.llm,
            out_dir: &cell_dir(plan, cell),
            epoch_checkpoint_every: plan.run.epoch_checkpoint_every(),
        };
        if let Some(messages) = build(&cell.config.method).first_prompt(&ctx)? {
            out!("\n=== {} ({}) ===", cell.name, cell.id);
            out!("{}", render_plain(&messages));
        }
    }
    Ok(())
}

fn cmd_run(spec: &Path, opts: &SpecOpts) -> anyhow::Result<bool> {
    let plan = load_plan(spec, opts)?;
    let cells = select(plan.cells.clone(), &opts.only)?;
    let exec = ExecOptions {
        jobs: plan.run.jobs,
        sets: opts.all_sets(),
    };
    let backend = plan.run.backend;
    let progress = Progress::new();
    let summary = execute(&plan, &cells, &exec, &|| device::select(backend), &progress)?;
    eprintln!(
        "{}: {} cells run, {} already complete, {} running elsewhere, {} failed; results in {}",
        plan.experiment.name,
        summary.ran,
        summary.skipped,
        summary.busy.len(),
        summary.failed.len(),
        plan.results_dir().display()
    );
    if !summary.table.is_empty() {
        out!("{}", summary.table);
    }
    for (cell, error) in &summary.failed {
        eprintln!("failed: {cell}: {error}");
    }
    Ok(summary.failed.is_empty())
}

fn cmd_run_cell(
    spec: &Path,
    id: &str,
    jobs_child: bool,
    opts: &SpecOpts,
) -> anyhow::Result<CellRun> {
    let plan = load_plan(spec, opts)?;
    let cell = plan.cells.iter().find(|c| c.id == id).with_context(|| {
        format!(
            "no cell with id {id} in {}; see `freeal-bench plan`",
            spec.display()
        )
    })?;
    let lock = match claim_cell(&plan, cell)? {
        CellClaim::Held(lock) => lock,
        CellClaim::Complete => {
            if !jobs_child {
                eprintln!(
                    "{}: already complete (its records.json); delete that file to run it again",
                    cell.name
                );
            }
            return Ok(CellRun::Complete);
        }
        CellClaim::Busy(who) => {
            if !jobs_child {
                eprintln!(
                    "{}: another process is running it ({who}); nothing done",
                    cell.name
                );
            }
            return Ok(CellRun::Busy(who));
        }
    };
    if jobs_child {
        restart_cell_log(&plan, cell)?;
    }
    for warning in preflight(&plan, std::slice::from_ref(cell))? {
        eprintln!("{warning}");
    }
    let (dev, name) = device::select(plan.run.backend)?;
    // A child's stdout is its cell's log.txt, so this writes progress lines there.
    run_claimed(&plan, cell, lock, &dev, &name, &Progress::new())?;
    Ok(CellRun::Ran)
}

fn cmd_report(opts: ReportOpts) -> anyhow::Result<()> {
    let ReportOpts {
        dir,
        other,
        metric,
        round,
        mlflow,
    } = opts;
    if let Some(other) = other {
        let (a, b) = (report::load(&dir)?, report::load(&other)?);
        let diff = report::diff::diff(&a, &b, metric.as_deref())?;
        out!(
            "# {} (A) vs {} (B)\n\n{}",
            dir.display(),
            other.display(),
            diff.markdown()
        );
        return Ok(());
    }
    if let Some(round) = round {
        let loaded = report::load(&dir)?;
        anyhow::ensure!(
            !loaded.records.is_empty(),
            "no complete cell under {}/cells",
            dir.display()
        );
        let metric = metric.unwrap_or(loaded.experiment.metric.clone());
        let summary = tables::summarize(
            &loaded.records,
            &metric,
            &loaded.experiment.paper_reference,
            Some(round),
        )?;
        out!("{}", summary.markdown());
        return Ok(());
    }
    let regenerated = report::regenerate(&dir, metric.as_deref())?;
    out!("{}", regenerated.summary.markdown());
    for missing in &regenerated.missing {
        let log = missing
            .slurm_log
            .as_ref()
            .map(|l| format!("\n  log: {l}"))
            .unwrap_or_default();
        out!(
            "missing: {} ({}){log}\n  rerun: {}",
            missing.name,
            missing.status,
            missing.rerun
        );
    }
    for plot in regenerated
        .plots
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "svg"))
    {
        out!("plot: {}", plot.display());
    }
    if mlflow {
        let root = report::mlflow::export(&regenerated.loaded)?;
        out!("mlflow: {}", root.display());
    }
    Ok(())
}

/// `report`'s arguments.
struct ReportOpts {
    dir: PathBuf,
    other: Option<PathBuf>,
    metric: Option<String>,
    round: Option<u32>,
    mlflow: bool,
}

fn main() -> ExitCode {
    freeal_bench::slm::allocator::keep_freed_memory();
    // SAFETY: first thing in main, before any thread exists.
    unsafe { freeal_bench::slm::device::quiet_headless_vulkan() };
    let cli = Cli::parse();
    let result = match (cli.command, cli.spec) {
        (Some(Cmd::Run { spec, opts }), _) => cmd_run(&spec, &opts),
        (
            Some(Cmd::Plan {
                spec,
                emit: Some(Emit::Slurm),
                opts,
                ..
            }),
            _,
        ) => cmd_emit_slurm(&spec, &opts).map(|_| true),
        (
            Some(Cmd::Plan {
                spec,
                show_prompt,
                emit: None,
                opts,
            }),
            _,
        ) => cmd_plan(&spec, show_prompt, &opts).map(|_| true),
        (
            Some(Cmd::Report {
                dir,
                other,
                metric,
                round,
                mlflow,
            }),
            _,
        ) => cmd_report(ReportOpts {
            dir,
            other,
            metric,
            round,
            mlflow,
        })
        .map(|_| true),
        (
            Some(Cmd::RunCell {
                spec,
                cell,
                jobs_child,
                opts,
            }),
            _,
        ) => match cmd_run_cell(&spec, &cell, jobs_child, &opts) {
            Ok(CellRun::Busy(_)) => return ExitCode::from(EXIT_BUSY as u8),
            Ok(CellRun::Complete) if jobs_child => return ExitCode::from(EXIT_COMPLETE as u8),
            other => other.map(|_| true),
        },
        (None, Some(spec)) => cmd_run(&spec, &cli.opts),
        (None, None) => {
            eprintln!(
                "usage: freeal-bench SPEC.toml | run | plan | report | run-cell (see --help)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            // Bad input (spec, data, missing model) is exit 2; failures while running are 1.
            let bad_input = matches!(
                error.downcast_ref::<Error>(),
                Some(
                    Error::Config { .. }
                        | Error::Data { .. }
                        | Error::Model { .. }
                        | Error::Io { .. }
                )
            );
            ExitCode::from(if bad_input { 2 } else { 1 })
        }
    }
}
