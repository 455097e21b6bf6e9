//! Spec -> plan: expands the sweep into cells, each with a resolved config and a stable id.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::load::within;
use crate::config::locate::key_location;
use crate::config::sweep::{Axis, axes, expand};
use crate::config::{
    DataSpec, ExperimentSpec, Layered, LlmSpec, MethodSpec, RunSpec, SlmSpec, Spec,
};
use crate::data::def::resolve;
use crate::data::{DatasetDef, Task};
use crate::error::{Error, Result};
use crate::llm::client::Price;
use crate::llm::prompt::{PromptTemplate, default_prompt_path};

/// Everything that determines a cell's numbers; its hash is the cell id.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CellConfig {
    /// The dataset definition (paths relative to its file).
    pub dataset: DatasetDef,
    /// Name of the method configuration.
    pub method_name: String,
    /// The method configuration.
    pub method: MethodSpec,
    /// Seed of every random choice in the cell.
    pub seed: u64,
    /// Subsampling.
    pub data: DataSpec,
    /// The classifier.
    pub slm: SlmSpec,
    /// The annotator and the task's prompt; only for methods that call the LLM, so that LLM
    /// settings never change the ids of cells that do not use it (nor do ids of such cells
    /// change from before the field existed: it is left out when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub llm: Option<LlmCell>,
}

/// The annotator settings and prompt of a cell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LlmCell {
    /// Backend, model, decoding.
    pub spec: LlmSpec,
    /// The prompt, read at planning time (editing the file changes the cell id).
    pub prompt: PromptTemplate,
    /// Price of the model (cost estimates only).
    pub price: Price,
}

/// One unit of work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cell {
    /// Stable id: first 12 hex digits of the SHA-256 of the resolved config.
    pub id: String,
    /// Human-readable name: dataset, method, seed and swept values.
    pub name: String,
    /// Swept keys (other than dataset, method, seed) and their values in this cell.
    pub params: BTreeMap<String, String>,
    /// Resolved configuration.
    pub config: CellConfig,
    /// Directory of the dataset definition (to find its files).
    pub dataset_dir: PathBuf,
}

/// `text` with every character other than ASCII letters, digits and those in `keep` replaced
/// by `with`: names that are safe as file names everywhere.
pub fn safe_name(text: &str, keep: &str, with: char) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || keep.contains(c) {
                c
            } else {
                with
            }
        })
        .collect()
}

impl Cell {
    /// Directory name under `cells/`.
    pub fn dir_name(&self) -> String {
        let short: String = safe_name(&self.name, "-_.=", '_')
            .chars()
            .take(80)
            .collect();
        format!("{short}-{}", self.id)
    }

    /// `params` as `k=v` joined by `,` (empty when nothing is swept).
    pub fn params_label(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The expanded experiment.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Experiment metadata (from the unswept spec).
    pub experiment: ExperimentSpec,
    /// Execution settings.
    pub run: RunSpec,
    /// Cells in sweep order.
    pub cells: Vec<Cell>,
    /// The spec file.
    pub spec_path: PathBuf,
    /// The checkout holding configs/ and datasets/.
    pub project_root: PathBuf,
    /// The layered TOML files, highest priority first, for locating a key in an error.
    pub files: Vec<PathBuf>,
    /// Overrides that change no cell, one line each (`--set methods.NAME...` for a method no
    /// cell runs).
    pub warnings: Vec<String>,
}

impl Plan {
    /// `<results_dir>/<experiment>`.
    pub fn results_dir(&self) -> PathBuf {
        PathBuf::from(&self.run.results_dir).join(&self.experiment.name)
    }
}

/// Hashes a config into a cell id.
pub fn cell_id(config: &CellConfig) -> String {
    let json = serde_json::to_string(config).expect("cell configs serialize");
    let digest = Sha256::digest(json.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn display_value(value: &figment::value::Value) -> String {
    use figment::value::Value;
    match value {
        Value::String(_, s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// The most cells one experiment may have.
pub const MAX_CELLS: usize = 100_000;

/// Expands a layered spec into its plan: one cell per sweep combination.
pub fn plan(layered: &Layered) -> Result<Plan> {
    let base = layered.spec()?;
    let sweep_axes =
        axes(&base.sweep).map_err(|(key, message)| layered_sweep_error(layered, &key, message))?;
    refuse_swept_sets(layered, &sweep_axes)?;
    let spec_dir = layered
        .spec_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    // Counted before expanding: a typo such as a 1000-value seed list times other axes must be
    // an error, not an hour of planning or an exhausted memory.
    let count = sweep_axes
        .iter()
        .try_fold(1usize, |n, axis| n.checked_mul(axis.rows.len()))
        .filter(|&n| n <= MAX_CELLS);
    if count.is_none() {
        let sizes: Vec<String> = sweep_axes
            .iter()
            .map(|a| format!("{} ({})", a.keys.join("+"), a.rows.len()))
            .collect();
        return Err(layered_sweep_error(
            layered,
            "sweep",
            format!(
                "expands to more than {MAX_CELLS} cells: {}; split the experiment",
                sizes.join(" x ")
            ),
        ));
    }
    let mut cells = Vec::new();
    let mut seen = BTreeMap::new();
    let mut definitions: BTreeMap<String, PathBuf> = BTreeMap::new();
    for assignments in expand(&sweep_axes) {
        let spec: Spec = layered.spec_with(&assignments)?;
        let def_path = resolve(&layered.project_root, &spec_dir, &spec.dataset)?;
        let mut dataset = DatasetDef::from_file(&def_path)?;
        // Cells and tables know a dataset by its definition's name, so two definitions under
        // one name would share table rows.
        let canonical = def_path.canonicalize().unwrap_or_else(|_| def_path.clone());
        if let Some(other) = definitions.insert(dataset.name.clone(), canonical.clone())
            && other != canonical
        {
            return Err(layered_sweep_error(
                layered,
                "sweep.dataset",
                format!(
                    "{} and {} both define a dataset named `{}`, and tables would merge their \
                     cells; give each its own `name`",
                    other.display(),
                    canonical.display(),
                    dataset.name
                ),
            ));
        }
        let method = spec.methods[&spec.method].clone();
        let llm = if method.uses_llm() {
            let by_name = spec.llm.prompts.trim().is_empty();
            let prompt_path = if by_name {
                default_prompt_path(&layered.project_root, &dataset.name)
            } else {
                layered.project_root.join("configs").join(&spec.llm.prompts)
            };
            if by_name && !prompt_path.is_file() {
                return Err(layered_sweep_error(
                    layered,
                    "llm.prompts",
                    format!(
                        "dataset `{}` has no prompt file at {}: write one (copy \
                         configs/prompts/sst2.toml, or conll03.toml for NER, and reword it for \
                         your labels), or set llm.prompts = \"prompts/<file>.toml\" (relative \
                         to configs/)",
                        dataset.name,
                        prompt_path.display()
                    ),
                ));
            }
            let mut prompt = PromptTemplate::load(&prompt_path)?;
            if spec.llm.label_descriptions {
                if dataset.task != Task::Classification {
                    return Err(layered_sweep_error(
                        layered,
                        "llm.label_descriptions",
                        format!(
                            "applies to classification; dataset `{}` is NER, whose extraction \
                             prompts describe every entity type already",
                            dataset.name
                        ),
                    ));
                }
                prompt = prompt.describing_labels(&dataset, &def_path, &prompt_path)?;
            }
            Some(LlmCell {
                spec: spec.llm.clone(),
                prompt,
                price: spec
                    .prices
                    .get(&spec.llm.model)
                    .copied()
                    .unwrap_or_default(),
            })
        } else {
            None
        };
        // A classification cell sees label descriptions only through its described prompt:
        // without it they would re-key cells they cannot change.
        let described = llm.as_ref().is_some_and(|l| l.spec.label_descriptions);
        if dataset.task == Task::Classification && !described {
            dataset.labels.descriptions.clear();
        }
        let config = CellConfig {
            llm,
            method,
            method_name: spec.method.clone(),
            seed: spec.seed,
            data: spec.data.clone(),
            slm: spec.slm.clone(),
            dataset,
        };
        let params: BTreeMap<String, String> = assignments
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "dataset" | "method" | "seed"))
            .map(|(k, v)| (k.clone(), display_value(v)))
            .collect();
        // The definition's name, not the spec's reference to it: a path would fill the
        // directory name's 80 characters before the method and seed.
        let mut name = format!("{}-{}-s{}", config.dataset.name, spec.method, spec.seed);
        for (k, v) in &params {
            name.push_str(&format!("-{}={v}", k.rsplit('.').next().unwrap_or(k)));
        }
        let id = cell_id(&config);
        if let Some(previous) = seen.insert(id.clone(), name.clone()) {
            return Err(layered_sweep_error(
                layered,
                "sweep",
                format!("cells `{previous}` and `{name}` resolve to the same configuration"),
            ));
        }
        cells.push(Cell {
            id,
            name,
            params,
            config,
            dataset_dir: def_path.parent().map(Path::to_path_buf).unwrap_or_default(),
        });
    }
    let warnings = unused_method_overrides(layered, &cells);
    Ok(Plan {
        experiment: base.experiment,
        run: base.run,
        cells,
        spec_path: layered.spec_path.clone(),
        project_root: layered.project_root.clone(),
        files: layered.files.clone(),
        warnings,
    })
}

/// Refuses a `--set` (or `FREEAL_BENCH_*` variable) of a key the sweep also sets: every cell
/// would take the sweep's value, so `--set seed=5` on a spec sweeping `seed = [1]` would run
/// seed 1 under the user's nose.
fn refuse_swept_sets(layered: &Layered, sweep_axes: &[Axis]) -> Result<()> {
    for (location, key) in layered.overrides() {
        let swept = sweep_axes
            .iter()
            .flat_map(|axis| &axis.keys)
            .find(|k| within(k, &key) || within(&key, k));
        if let Some(swept) = swept {
            return Err(Error::Config {
                location,
                key,
                message: format!(
                    "the spec sweeps `{swept}`, whose values replace this one in every cell; \
                     set the sweep instead: --set 'sweep.{swept}=[...]'"
                ),
            });
        }
    }
    Ok(())
}

/// Overrides of a `[methods.NAME]` table that no cell runs: `--set methods.freeal.knn=10` on a
/// spec whose cells run `freeal_replay` changes nothing, which the user should hear.
fn unused_method_overrides(layered: &Layered, cells: &[Cell]) -> Vec<String> {
    let used: std::collections::BTreeSet<&str> = cells
        .iter()
        .map(|c| c.config.method_name.as_str())
        .collect();
    layered
        .overrides()
        .into_iter()
        .filter_map(|(location, key)| {
            let name = key.strip_prefix("methods.")?.split('.').next()?;
            (!used.contains(name)).then(|| {
                format!(
                    "warning: {location}: no cell runs method `{name}`, so it changes nothing \
                     (the cells run: {})",
                    used.iter().copied().collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}

fn layered_sweep_error(layered: &Layered, key: &str, message: String) -> Error {
    Error::Config {
        location: key_location(&layered.files, key, &layered.spec_path),
        key: key.to_string(),
        message,
    }
}

/// Keeps the cells whose name or id matches any of the glob patterns (all when none given); a
/// pattern that matches no cell is refused, since a typo would otherwise run or list nothing.
pub fn select(cells: Vec<Cell>, patterns: &[String]) -> Result<Vec<Cell>> {
    let mut globs = Vec::new();
    for pattern in patterns {
        let glob = globset::Glob::new(pattern).map_err(|e| Error::Config {
            location: "--only".into(),
            key: pattern.clone(),
            message: format!("not a valid glob: {e}"),
        })?;
        let matcher = glob.compile_matcher();
        if !cells
            .iter()
            .any(|c| matcher.is_match(&c.name) || matcher.is_match(&c.id))
        {
            return Err(Error::Config {
                location: "--only".into(),
                key: pattern.clone(),
                message: format!(
                    "matches none of the spec's {} cells (by name or id); `freeal-bench plan \
                     SPEC` lists them",
                    cells.len()
                ),
            });
        }
        globs.push(matcher);
    }
    if globs.is_empty() {
        return Ok(cells);
    }
    Ok(cells
        .into_iter()
        .filter(|c| {
            globs
                .iter()
                .any(|g| g.is_match(&c.name) || g.is_match(&c.id))
        })
        .collect())
}
