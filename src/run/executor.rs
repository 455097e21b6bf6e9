//! Runs a plan: skips complete cells, runs the rest (in this process, or as `run-cell` child
//! processes with `--jobs N`), then rebuilds the experiment's tables from all records.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use burn::tensor::Device;

use super::lock::{self, CellLock, Claim};
use super::records::{
    CHECKPOINT_JSON, ERROR_TXT, RoundRecord, WARNINGS_TXT, read_cell_records,
    remove_epoch_checkpoint, remove_stale_temporaries, write_atomic, write_cell_records,
};
use crate::config::LlmBackend;
use crate::config::load::combine;
use crate::config::locate::key_or_table_location;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::llm::ensure_gguf;
use crate::methods::{CellContext, build};
use crate::plan::{Cell, Plan};
use crate::progress::Progress;
use crate::report::{EXPERIMENT_JSON, RERUN_TXT, SHARDED_CACHE_TXT, regenerate};
use crate::slm::model::{default_models_dir, ensure_model};

/// Directory of one cell's outputs.
pub fn cell_dir(plan: &Plan, cell: &Cell) -> PathBuf {
    plan.results_dir().join("cells").join(cell.dir_name())
}

/// Directories of the plan's cells recorded under an earlier name, by cell id. A cell's id is
/// the hash of its configuration, so a directory under `cells/` ending in `-<id>` holds that
/// cell whatever name it was run under (before, cells of a dataset named by its definition's
/// path were named by the path). Only cells without a directory under their current name, and
/// with exactly one such directory, are listed.
pub fn earlier_cell_dirs(plan: &Plan) -> HashMap<String, PathBuf> {
    let cells = plan.results_dir().join("cells");
    let Ok(entries) = std::fs::read_dir(&cells) else {
        return HashMap::new();
    };
    let mut by_id: HashMap<String, Vec<PathBuf>> = HashMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some((_, id)) = name.rsplit_once('-') {
            by_id.entry(id.to_string()).or_default().push(entry.path());
        }
    }
    plan.cells
        .iter()
        .filter(|cell| !cell_dir(plan, cell).exists())
        .filter_map(|cell| match by_id.remove(&cell.id)?.as_slice() {
            [earlier] => Some((cell.id.clone(), earlier.clone())),
            _ => None,
        })
        .collect()
}

/// Gives cells recorded under an earlier name ([`earlier_cell_dirs`]) their current one; left
/// alone, such a cell would run again under the new name and then count twice. A directory
/// another process is running is left where it is.
pub fn adopt_renamed_cells(plan: &Plan) -> Result<()> {
    let earlier = earlier_cell_dirs(plan);
    for cell in &plan.cells {
        if let Some(dir) = earlier.get(&cell.id)
            && lock::holder(dir).is_none()
        {
            std::fs::rename(dir, cell_dir(plan, cell)).map_err(|e| Error::io(dir, e))?;
        }
    }
    Ok(())
}

/// Where fetched models live for this plan.
pub fn models_dir(plan: &Plan) -> PathBuf {
    if plan.run.models_dir.is_empty() {
        default_models_dir()
    } else {
        PathBuf::from(&plan.run.models_dir)
    }
}

/// Loads and subsamples a cell's dataset.
pub fn load_dataset(cell: &Cell) -> Result<Dataset> {
    let mut def = cell.config.dataset.clone();
    def.base_dir = cell.dataset_dir.clone();
    let data = &cell.config.data;
    let train_file = def.path(&def.files.train);
    Ok(Dataset::load(&def, data.seed)?
        .handle_duplicates(data.duplicates, &train_file)?
        .limit(data.train_limit, data.test_limit, data.seed))
}

fn to_json<T: serde::Serialize>(value: &T, what: &Path) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(value).map_err(|e| Error::results(what, e.to_string()))
}

/// Loads every cell's dataset (each distinct one once) and checks each method against it,
/// before anything is written: bad data or impossible sizes stop the run as bad input, with no
/// results that could pass for valid. Returns the datasets' warnings, one line each.
pub fn preflight(plan: &Plan, cells: &[Cell]) -> Result<Vec<String>> {
    let mut loaded: HashMap<String, Dataset> = HashMap::new();
    let mut warnings = Vec::new();
    let mut problems: BTreeMap<String, Error> = BTreeMap::new();
    let location = |key: &str| key_or_table_location(&plan.files, key, &plan.spec_path);
    for cell in cells {
        let key =
            serde_json::to_string(&(&cell.config.dataset, &cell.dataset_dir, &cell.config.data))
                .map_err(|e| Error::results(&plan.spec_path, e.to_string()))?;
        if !loaded.contains_key(&key) {
            let dataset = load_dataset(cell)?;
            warnings.extend(
                dataset
                    .split
                    .warnings
                    .iter()
                    .map(|w| format!("warning: dataset {}: {w}", dataset.name)),
            );
            loaded.insert(key.clone(), dataset);
        }
        let dataset = &loaded[&key];
        let simulated = cell
            .config
            .llm
            .as_ref()
            .is_some_and(|l| l.spec.backend == LlmBackend::Simulated);
        if simulated && !dataset.pool_labeled() {
            problems
                .entry("llm.backend".into())
                .or_insert(Error::Config {
                    location: location("llm.backend"),
                    key: "llm.backend".into(),
                    message: format!(
                        "the simulated annotator answers from gold labels, and dataset {}'s pool \
                     has none (files.train_unlabeled = true): use embedded, http or replay \
                     (cell {})",
                        dataset.name, cell.name
                    ),
                });
        }
        if let Err((field, message)) = build(&cell.config.method).check(cell, dataset) {
            let key = format!("methods.{}.{field}", cell.config.method_name);
            problems.entry(key.clone()).or_insert(Error::Config {
                location: location(&key),
                key,
                message: format!("{message} (cell {})", cell.name),
            });
        }
    }
    if problems.is_empty() {
        Ok(warnings)
    } else {
        Err(combine(problems.into_values().collect()))
    }
}

/// What [`run_cell`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CellRun {
    /// Ran the cell and wrote its records.
    Ran,
    /// The cell already had its records (another process may have just finished it); nothing
    /// was run.
    Complete,
    /// Another process is running the cell (who, from its lock file); nothing was run.
    Busy(String),
}

/// What claiming a cell gave.
#[derive(Debug)]
pub enum CellClaim {
    /// This process holds the cell, and it had no records under the claim: run it with
    /// [`run_claimed`].
    Held(CellLock),
    /// The cell already had its records (another process may have just finished it).
    Complete,
    /// Another process is running the cell (who, from its lock file).
    Busy(String),
}

/// Claims a cell for this process without waiting, unless it is complete or another process
/// holds it.
pub fn claim_cell(plan: &Plan, cell: &Cell) -> Result<CellClaim> {
    let dir = cell_dir(plan, cell);
    let lock = match lock::claim(&dir)? {
        Claim::Held(lock) => lock,
        Claim::Busy(who) => return Ok(CellClaim::Busy(who)),
    };
    // Checked under the lock: a process that held it until now may have finished the cell.
    if read_cell_records(&dir, &cell.id).is_some() {
        return Ok(CellClaim::Complete);
    }
    Ok(CellClaim::Held(lock))
}

/// Runs one cell in this process and writes its records, unless it is complete or another
/// process holds it.
pub fn run_cell(
    plan: &Plan,
    cell: &Cell,
    device: &Device,
    device_name: &str,
    progress: &Progress,
) -> Result<CellRun> {
    match claim_cell(plan, cell)? {
        CellClaim::Held(lock) => {
            run_claimed(plan, cell, lock, device, device_name, progress)?;
            Ok(CellRun::Ran)
        }
        CellClaim::Complete => Ok(CellRun::Complete),
        CellClaim::Busy(who) => Ok(CellRun::Busy(who)),
    }
}

/// Runs a cell this process has claimed (`lock`, released on return) and writes its records.
///
/// A failure is also written to the cell's `error.txt` (what `report` shows for it, whoever
/// ran the cell: this process, a `--jobs` child or a Slurm array task); success removes it.
pub fn run_claimed(
    plan: &Plan,
    cell: &Cell,
    lock: CellLock,
    device: &Device,
    device_name: &str,
    progress: &Progress,
) -> Result<()> {
    let error_path = cell_dir(plan, cell).join(ERROR_TXT);
    let result = run_cell_once(plan, cell, device, device_name, progress);
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_file(&error_path);
        }
        Err(e) => {
            // Best effort: the error is returned either way.
            let _ = write_atomic(&error_path, e.to_string().as_bytes());
        }
    }
    drop(lock);
    result
}

/// Empties the cell's `log.txt` once a `--jobs` child owns the cell. The parent opens the log
/// for appending without truncating it, so a child that finds the cell busy or complete
/// leaves the log of whoever ran it intact; the child's writes, appended, start again at the
/// beginning.
pub fn restart_cell_log(plan: &Plan, cell: &Cell) -> Result<()> {
    let path = cell_dir(plan, cell).join(LOG_TXT);
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .and_then(|file| file.set_len(0))
        .map_err(|e| Error::io(&path, e))
}

fn run_cell_once(
    plan: &Plan,
    cell: &Cell,
    device: &Device,
    device_name: &str,
    progress: &Progress,
) -> Result<()> {
    let dir = cell_dir(plan, cell);
    remove_stale_temporaries(&dir);
    // An earlier, interrupted attempt's warnings describe results this run replaces.
    let _ = std::fs::remove_file(dir.join(WARNINGS_TXT));
    let config_path = dir.join("config.json");
    write_atomic(&config_path, &to_json(cell, &config_path)?)?;
    let dataset = load_dataset(cell)?;
    let split_path = dir.join("split.json");
    write_atomic(&split_path, &to_json(&dataset.split, &split_path)?)?;
    let models = models_dir(plan);
    let ctx = CellContext {
        cell,
        dataset: &dataset,
        device,
        models_dir: &models,
        progress,
        llm_run: &plan.run.llm,
        out_dir: &dir,
        epoch_checkpoint_every: plan.run.epoch_checkpoint_every(),
    };
    // A method's own cell error already names the cell.
    let outcomes = build(&cell.config.method).run(&ctx).map_err(|e| match e {
        Error::Cell { .. } => e,
        other => Error::Cell {
            cell: cell.name.clone(),
            message: other.to_string(),
        },
    })?;
    let records: Vec<RoundRecord> = outcomes
        .into_iter()
        .map(|outcome| RoundRecord {
            cell_id: cell.id.clone(),
            cell: cell.name.clone(),
            method: cell.config.method_name.clone(),
            dataset: cell.config.dataset.name.clone(),
            seed: cell.config.seed,
            params: cell.params_label(),
            outcome,
        })
        .collect();
    write_cell_records(&dir, &records)?;
    // The records hold everything the checkpoint did; a stale one must not outlive them.
    let _ = std::fs::remove_file(dir.join(CHECKPOINT_JSON));
    remove_epoch_checkpoint(&dir);
    let device_path = dir.join("device.txt");
    write_atomic(&device_path, device_name.as_bytes())
}

/// How a plan is executed.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// Cells run at once (child processes when above 1).
    pub jobs: usize,
    /// `--set` overrides in force (`KEY=VALUE`), repeated to child processes and written into
    /// the rerun command.
    pub sets: Vec<String>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// Cells run now.
    pub ran: usize,
    /// Cells already complete and skipped.
    pub skipped: usize,
    /// Cells that failed, with their error.
    pub failed: Vec<(String, String)>,
    /// Cells left alone because another process was running them, with who.
    pub busy: Vec<(String, String)>,
    /// The summary table in Markdown (empty when nothing is complete).
    pub table: String,
}

impl RunSummary {
    fn note_busy(&mut self, progress: &Progress, cell: &Cell, who: String) {
        progress.println(&format!(
            "SKIPPED {}: another process is running it ({who})",
            cell.name
        ));
        self.busy.push((cell.name.clone(), who));
    }
}

/// The exit status of `run-cell` when another process holds the cell (EX_TEMPFAIL: try later).
pub const EXIT_BUSY: i32 = 75;

/// The exit status of `run-cell --jobs-child` when the cell was already complete (a plain
/// `run-cell` exits 0 then, which a Slurm array counts as done); the parent counts it as
/// skipped, not run.
pub const EXIT_COMPLETE: i32 = 76;

/// A cell's log in `--jobs` runs: the child's stdout and stderr.
const LOG_TXT: &str = "log.txt";

fn spawn_child(plan: &Plan, cell: &Cell, opts: &ExecOptions) -> Result<Child> {
    let dir = cell_dir(plan, cell);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let log_path = dir.join(LOG_TXT);
    // Appending, not truncating: the child empties it once it owns the cell
    // ([`restart_cell_log`]); until then it may be the log of a run that holds or finished it.
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let err = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
    let exe = std::env::current_exe().map_err(|e| Error::io("current executable", e))?;
    Command::new(exe)
        .arg("run-cell")
        .arg(&plan.spec_path)
        .arg("--cell")
        .arg(&cell.id)
        .arg("--jobs-child")
        .args(opts.sets.iter().flat_map(|set| ["--set", set.as_str()]))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .map_err(|e| Error::io(&log_path, e))
}

/// `path` made absolute (against the working directory), for files read from elsewhere.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(path, e))
}

/// The spec path a rerun command names: relative to the checkout root when the spec lies
/// inside it, so the command in a committed results README works in any clone; absolute
/// otherwise.
fn spec_for_rerun(spec: &Path, project_root: &Path) -> Result<PathBuf> {
    let inside = spec
        .canonicalize()
        .ok()
        .and_then(|p| p.strip_prefix(project_root).ok().map(Path::to_path_buf));
    match inside {
        Some(relative) => Ok(relative),
        None => absolute(spec),
    }
}

/// Quotes a word for bash when it needs it (single quotes; an embedded quote becomes `'\''`).
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:".contains(c))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Writes what `report` needs besides the cells (the spec's copy, experiment.json,
/// plan.json, the command that reruns one cell with the `--set` overrides `sets`) and returns
/// the experiment directory.
pub fn prepare_experiment_dir(plan: &Plan, sets: &[String]) -> Result<PathBuf> {
    let exp_dir = plan.results_dir();
    std::fs::create_dir_all(&exp_dir).map_err(|e| Error::io(&exp_dir, e))?;
    remove_stale_temporaries(&exp_dir);
    remove_stale_temporaries(&exp_dir.join("plots"));
    let spec_text = std::fs::read(&plan.spec_path).map_err(|e| Error::io(&plan.spec_path, e))?;
    write_atomic(&exp_dir.join("spec.toml"), &spec_text)?;
    // The command that reruns one cell as this run would (`report` appends `--cell ID`): the
    // original spec (includes and datasets resolve from its folder) and the same overrides.
    let mut rerun = format!(
        "freeal-bench run-cell {}",
        shell_quote(
            &spec_for_rerun(&plan.spec_path, &plan.project_root)?
                .display()
                .to_string()
        )
    );
    for set in sets {
        rerun.push_str(&format!(" --set {}", shell_quote(set)));
    }
    write_atomic(&exp_dir.join(RERUN_TXT), rerun.as_bytes())?;
    // Where `report` finds the cache whose shards it merges.
    let shards_of = exp_dir.join(SHARDED_CACHE_TXT);
    match (
        plan.run.llm.cache_shards,
        crate::llm::cache_path(&plan.run.llm),
    ) {
        (true, Some(path)) => {
            write_atomic(
                &shards_of,
                absolute(&path)?.display().to_string().as_bytes(),
            )?;
        }
        _ => {
            let _ = std::fs::remove_file(&shards_of);
        }
    }
    let meta_path = exp_dir.join(EXPERIMENT_JSON);
    write_atomic(&meta_path, &to_json(&plan.experiment, &meta_path)?)?;
    let listing: Vec<serde_json::Value> = plan
        .cells
        .iter()
        .map(|c| serde_json::json!({"id": c.id, "name": c.name, "dir": c.dir_name()}))
        .collect();
    let plan_path = exp_dir.join("plan.json");
    write_atomic(&plan_path, &to_json(&listing, &plan_path)?)?;
    Ok(exp_dir)
}

/// Runs the selected cells of a plan and rebuilds the tables.
pub fn execute(
    plan: &Plan,
    cells: &[Cell],
    opts: &ExecOptions,
    device: &dyn Fn() -> Result<(Device, String)>,
    progress: &Progress,
) -> Result<RunSummary> {
    adopt_renamed_cells(plan)?;
    let mut summary = RunSummary::default();
    let mut pending = Vec::new();
    for cell in cells {
        if read_cell_records(&cell_dir(plan, cell), &cell.id).is_some() {
            summary.skipped += 1;
        } else {
            pending.push(cell.clone());
        }
    }
    for warning in preflight(plan, &pending)? {
        progress.println(&warning);
    }
    let exp_dir = prepare_experiment_dir(plan, &opts.sets)?;
    let bar = progress.sweep(cells.len() as u64);
    bar.set_position(summary.skipped as u64);
    bar.set_message(plan.experiment.name.clone());
    let models = models_dir(plan);
    let mut needed: Vec<&str> = pending
        .iter()
        .map(|c| c.config.slm.model.as_str())
        .collect();
    needed.dedup();
    for model in needed {
        ensure_model(model, &models, &plan.project_root)?;
    }
    let mut ggufs: Vec<&str> = pending
        .iter()
        .filter_map(|c| c.config.llm.as_ref())
        .filter(|l| l.spec.backend == LlmBackend::Embedded)
        .map(|l| l.spec.model.as_str())
        .collect();
    ggufs.dedup();
    for model in ggufs {
        ensure_gguf(model, &models, &plan.project_root)?;
    }
    if !pending.is_empty() {
        if opts.jobs <= 1 {
            let (dev, name) = device()?;
            progress.println(&format!("device: {name}"));
            for cell in &pending {
                progress.cell(&bar, &cell.name);
                match run_cell(plan, cell, &dev, &name, progress) {
                    Ok(CellRun::Ran) => summary.ran += 1,
                    Ok(CellRun::Complete) => summary.skipped += 1,
                    Ok(CellRun::Busy(who)) => summary.note_busy(progress, cell, who),
                    Err(e) => {
                        // The line names the cell once, not again inside the error's text.
                        let text = match e {
                            Error::Cell { message, .. } => message,
                            other => other.to_string(),
                        };
                        progress.println(&format!("FAILED {}: {text}", cell.name));
                        summary.failed.push((cell.name.clone(), text));
                    }
                }
                bar.inc(1);
            }
        } else {
            let mut queue: VecDeque<Cell> = pending.into_iter().collect();
            let mut running: Vec<(Cell, Child)> = Vec::new();
            while !queue.is_empty() || !running.is_empty() {
                while running.len() < opts.jobs {
                    let Some(cell) = queue.pop_front() else { break };
                    // Another run of the spec may hold or have finished the cell since the
                    // start. Asking here saves starting a child for it; a child that loses
                    // the same race later says so by its exit status.
                    let dir = cell_dir(plan, &cell);
                    if let Some(who) = lock::holder(&dir) {
                        summary.note_busy(progress, &cell, who);
                        bar.inc(1);
                        continue;
                    }
                    if read_cell_records(&dir, &cell.id).is_some() {
                        summary.skipped += 1;
                        bar.inc(1);
                        continue;
                    }
                    progress.cell(&bar, &cell.name);
                    let child = spawn_child(plan, &cell, opts)?;
                    running.push((cell, child));
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
                let mut still = Vec::new();
                for (cell, mut child) in running {
                    match child
                        .try_wait()
                        .map_err(|e| Error::io("child process", e))?
                    {
                        None => still.push((cell, child)),
                        Some(status) => {
                            bar.inc(1);
                            let dir = cell_dir(plan, &cell);
                            let log = dir.join(LOG_TXT);
                            if status.success() {
                                summary.ran += 1;
                            } else if status.code() == Some(EXIT_COMPLETE) {
                                summary.skipped += 1;
                            } else if status.code() == Some(EXIT_BUSY) {
                                // The child leaves the holder's log alone, so ask the lock.
                                let who = lock::holder(&dir).unwrap_or_else(|| {
                                    "a process that has finished since".to_string()
                                });
                                summary.note_busy(progress, &cell, who);
                            } else {
                                let text = format!("exited with {status}; see {}", log.display());
                                progress.println(&format!("FAILED {}: {text}", cell.name));
                                summary.failed.push((cell.name.clone(), text));
                            }
                        }
                    }
                }
                running = still;
            }
        }
    }
    bar.finish_and_clear();
    progress.finish();
    match regenerate(&exp_dir, None) {
        Ok(report) => summary.table = report.summary.markdown(),
        // Nothing complete yet (every cell failed): the failures are the report.
        Err(Error::Results { .. }) if summary.ran == 0 && summary.skipped == 0 => {}
        Err(e) => return Err(e),
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_spaces_and_quotes() {
        assert_eq!(shell_quote("slm.epochs=2"), "slm.epochs=2");
        assert_eq!(shell_quote("run.backend=\"cpu\""), "'run.backend=\"cpu\"'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn a_spec_inside_the_checkout_is_named_from_its_root() {
        let root = tempfile::tempdir().unwrap();
        let root_path = root.path().canonicalize().unwrap();
        std::fs::create_dir_all(root_path.join("experiments")).unwrap();
        let inside = root_path.join("experiments/a.toml");
        std::fs::write(&inside, "").unwrap();
        assert_eq!(
            spec_for_rerun(&inside, &root_path).unwrap(),
            PathBuf::from("experiments/a.toml")
        );
        let elsewhere = tempfile::tempdir().unwrap();
        let outside = elsewhere.path().join("b.toml");
        std::fs::write(&outside, "").unwrap();
        let shown = spec_for_rerun(&outside, &root_path).unwrap();
        assert!(
            shown.is_absolute() && shown.ends_with("b.toml"),
            "{shown:?}"
        );
    }
}
