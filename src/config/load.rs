//! Layering: `configs/defaults.toml` < `include`d files < the spec < `FREEAL_BENCH_*` < `--set`.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::Value;

use super::locate::locate;
use super::spec::{MethodSpec, Spec};
use super::validate::validate;
use crate::error::{Error, Result};

/// Environment prefix; `__` separates nested keys (`FREEAL_BENCH_SLM__EPOCHS=2`).
pub const ENV_PREFIX: &str = "FREEAL_BENCH_";

/// A layered spec together with what is needed to explain errors and resolve relative paths.
#[derive(Debug, Clone)]
pub struct Layered {
    /// The merged configuration (before typing).
    pub figment: Figment,
    /// The spec file given on the command line.
    pub spec_path: PathBuf,
    /// Directory holding `configs/` and `datasets/`.
    pub project_root: PathBuf,
    /// TOML files in priority order, highest first (spec, includes reversed, defaults).
    pub files: Vec<PathBuf>,
    /// Keys set with `--set`, for error messages.
    pub set_keys: Vec<String>,
    /// Keys set by `FREEAL_BENCH_*` variables: (variable, dotted key).
    pub env_keys: Vec<(String, String)>,
}

/// Whether the dotted key `inner` is `outer` or lies under it (`slm.lr` under `slm`).
pub fn within(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// Finds the project root: the nearest ancestor of the spec (or the working directory) that has
/// `configs/defaults.toml`.
pub fn find_project_root(spec_path: &Path) -> Result<PathBuf> {
    let spec_dir = spec_path
        .canonicalize()
        .map_err(|e| Error::io(spec_path, e))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let cwd = std::env::current_dir().map_err(|e| Error::io(".", e))?;
    for start in [spec_dir, cwd] {
        if let Some(root) = start
            .ancestors()
            .find(|dir| dir.join("configs/defaults.toml").is_file())
        {
            return Ok(root.to_path_buf());
        }
    }
    Err(Error::Config {
        location: spec_path.display().to_string(),
        key: "(project)".into(),
        message: "no configs/defaults.toml found above the spec or the working directory; run \
                  from the freeal-bench checkout"
            .into(),
    })
}

/// Parses `KEY=VALUE`; VALUE is read as a TOML value, or taken as a string when it is not one.
pub fn parse_set(assignment: &str) -> Result<(String, Value)> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| Error::Config {
        location: "--set".into(),
        key: assignment.into(),
        message: "expected KEY=VALUE, e.g. --set slm.epochs=2".into(),
    })?;
    let key = key.trim().to_string();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(Error::Config {
            location: "--set".into(),
            key,
            message: "expected a dotted key path such as slm.lr".into(),
        });
    }
    let doc = format!("v = {raw}");
    let value = match doc.parse::<toml::Table>() {
        Ok(mut table) => {
            let v = table.remove("v").expect("the key was written above");
            Value::serialize(v).map_err(|e| Error::Config {
                location: "--set".into(),
                key: key.clone(),
                message: e.to_string(),
            })?
        }
        Err(_) => Value::from(raw.to_string()),
    };
    Ok((key, value))
}

/// Reads the `include` list of a spec file.
fn read_includes(spec_path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(spec_path).map_err(|e| Error::io(spec_path, e))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| Error::Config {
        location: format!(
            "{}:{}",
            spec_path.display(),
            e.span()
                .map(|s| super::locate::line_of(&text, s.start))
                .unwrap_or(0)
        ),
        key: "(syntax)".into(),
        message: e.message().to_string(),
    })?;
    match table.get("include") {
        None => Ok(Vec::new()),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| Error::Config {
                        location: spec_path.display().to_string(),
                        key: "include".into(),
                        message: "expected a list of file names under configs/".into(),
                    })
            })
            .collect(),
        Some(_) => Err(Error::Config {
            location: spec_path.display().to_string(),
            key: "include".into(),
            message: "expected a list of file names under configs/".into(),
        }),
    }
}

/// Checks a TOML file's syntax up front, so that a syntax error names its own line.
fn check_syntax(path: &Path) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    text.parse::<toml::Table>()
        .map(|_| ())
        .map_err(|e| Error::Config {
            location: format!(
                "{}:{}",
                path.display(),
                e.span()
                    .map(|s| super::locate::line_of(&text, s.start))
                    .unwrap_or(0)
            ),
            key: "(syntax)".into(),
            message: e.message().trim().to_string(),
        })
}

/// Builds the layered figment for a spec file and `--set` assignments.
pub fn layer(spec_path: &Path, sets: &[String]) -> Result<Layered> {
    let project_root = find_project_root(spec_path)?;
    let defaults = project_root.join("configs/defaults.toml");
    check_syntax(&defaults)?;
    check_syntax(spec_path)?;
    let mut figment = Figment::from(Toml::file_exact(&defaults));
    let mut files = vec![defaults];
    for include in read_includes(spec_path)? {
        let path = project_root.join("configs").join(&include);
        if !path.is_file() {
            return Err(Error::Config {
                location: spec_path.display().to_string(),
                key: "include".into(),
                message: format!("included file {} does not exist", path.display()),
            });
        }
        check_syntax(&path)?;
        figment = figment.merge(Toml::file_exact(&path));
        files.push(path);
    }
    figment = figment.merge(Toml::file_exact(spec_path));
    files.push(spec_path.to_path_buf());
    figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
    // What the Env provider reads: the prefix dropped, lower case, `__` nesting.
    let env_keys = std::env::vars_os()
        .filter_map(|(name, _)| {
            let name = name.into_string().ok()?;
            let key = name
                .strip_prefix(ENV_PREFIX)?
                .to_lowercase()
                .replace("__", ".");
            Some((name, key))
        })
        .collect();
    let mut set_keys = Vec::new();
    for assignment in sets {
        let (key, value) = parse_set(assignment)?;
        figment = figment.merge(Serialized::default(&key, value));
        set_keys.push(key);
    }
    files.reverse();
    Ok(Layered {
        figment,
        spec_path: spec_path.to_path_buf(),
        project_root,
        files,
        set_keys,
        env_keys,
    })
}

impl Layered {
    /// Keys set on the command line or in the environment, each with where it was set.
    pub fn overrides(&self) -> Vec<(String, String)> {
        let sets = self
            .set_keys
            .iter()
            .map(|key| (format!("--set {key}"), key.clone()));
        let env = self
            .env_keys
            .iter()
            .map(|(name, key)| (format!("environment variable {name}"), key.clone()));
        sets.chain(env).collect()
    }

    /// Extracts and validates the spec.
    pub fn spec(&self) -> Result<Spec> {
        self.spec_with(&[])
    }

    /// Extracts and validates the spec with sweep `overrides` merged on top; a problem with an
    /// overridden key is located at its `[sweep]` entry.
    pub fn spec_with(&self, overrides: &[(String, Value)]) -> Result<Spec> {
        let mut figment = self.figment.clone();
        for (key, value) in overrides {
            figment = figment.merge(Serialized::default(key, value.clone()));
        }
        let swept: Vec<String> = overrides.iter().map(|(k, _)| k.clone()).collect();
        let spec: Spec = figment.extract().map_err(|errors| {
            combine(
                errors
                    .into_iter()
                    .map(|e| self.explain(e, &figment, &swept))
                    .collect(),
            )
        })?;
        let problems = validate(&spec);
        if problems.is_empty() {
            return Ok(spec);
        }
        Err(combine(
            problems
                .into_iter()
                .map(|(key, message)| {
                    let path: Vec<String> = key.split('.').map(str::to_string).collect();
                    Error::Config {
                        location: self.describe_source(&path, None, &swept),
                        key,
                        message,
                    }
                })
                .collect(),
        ))
    }

    fn explain(&self, error: figment::Error, figment: &Figment, swept: &[String]) -> Error {
        use figment::error::Kind;
        let mut path = error.path.clone();
        if let Kind::UnknownField(field, _) = &error.kind
            && path.last() != Some(field)
        {
            path.push(field.clone());
        } else if let Some(key) = method_culprit(figment, &path) {
            path.push(key);
        }
        let message = match &error.kind {
            Kind::UnknownField(field, expected) => format!(
                "unknown key `{field}`; expected one of: {}",
                expected.join(", ")
            ),
            Kind::MissingField(field) => format!("missing key `{field}`"),
            Kind::UnknownVariant(found, expected) => format!(
                "unknown value `{found}`; expected one of: {}",
                expected.join(", ")
            ),
            other => other.to_string(),
        };
        let metadata_file = error
            .metadata
            .as_ref()
            .and_then(|m| m.source.as_ref())
            .and_then(|s| s.file_path())
            .map(Path::to_path_buf);
        Error::Config {
            location: self.describe_source(&path, metadata_file, swept),
            key: path.join("."),
            message,
        }
    }

    /// Names the layer a key came from: `file:line`, `--set`, or the environment.
    fn describe_source(&self, path: &[String], hint: Option<PathBuf>, swept: &[String]) -> String {
        let joined = path.join(".");
        let covers = |k: &String| within(&joined, k);
        if let Some(key) = swept.iter().find(|k| covers(k)) {
            let quoted = vec!["sweep".to_string(), key.clone()];
            let mut nested = vec!["sweep".to_string()];
            nested.extend(key.split('.').map(str::to_string));
            let found = locate(&self.files, &quoted)
                .filter(|l| l.depth == 2)
                .or_else(|| locate(&self.files, &nested));
            return match found {
                Some(loc) => format!("{} (sweep value)", loc.display()),
                None => format!("{} [sweep]", self.spec_path.display()),
            };
        }
        if self.set_keys.iter().any(covers) {
            return format!("--set {joined}");
        }
        let env_name = format!(
            "{ENV_PREFIX}{}",
            path.iter()
                .map(|s| s.to_uppercase())
                .collect::<Vec<_>>()
                .join("__")
        );
        if std::env::var_os(&env_name).is_some() {
            return format!("environment variable {env_name}");
        }
        let mut files = self.files.clone();
        if let Some(hint) = hint {
            files.retain(|f| f != &hint);
            files.insert(0, hint);
        }
        match locate(&files, path) {
            Some(loc) => loc.display(),
            None => self.spec_path.display().to_string(),
        }
    }
}

/// The key of a `[methods.NAME]` table that its error is about. `kind` tags the table, so serde
/// reads it whole and reports a bad value (`clean_split = "xyz"`) against `methods.NAME` alone;
/// the key is the one whose removal makes the error go (or become "missing key").
fn method_culprit(figment: &Figment, path: &[String]) -> Option<String> {
    let [methods, name] = path else {
        return None;
    };
    if methods != "methods" {
        return None;
    }
    let Ok(Value::Dict(_, table)) = figment.find_value(&format!("methods.{name}")) else {
        return None;
    };
    table.keys().filter(|k| *k != "kind").find_map(|key| {
        let mut without = table.clone();
        without.remove(key);
        match Figment::from(Serialized::defaults(without)).extract::<MethodSpec>() {
            Ok(_) => Some(key.clone()),
            Err(e) => matches!(&e.kind, figment::error::Kind::MissingField(f) if f == key)
                .then(|| key.clone()),
        }
    })
}

/// One error from several: the first alone, or all of them joined line by line.
pub fn combine(mut errors: Vec<Error>) -> Error {
    if errors.len() == 1 {
        return errors.remove(0);
    }
    let text = errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n  ");
    Error::Config {
        location: format!("{} problems", errors.len()),
        key: "(several)".into(),
        message: format!("\n  {text}"),
    }
}
