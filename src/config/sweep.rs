//! Sweep expansion: every list under `[sweep]` is an axis of a cartesian product; each table of
//! `[[sweep.zip]]` is one axis whose lists advance together (paired parameters).

use std::collections::BTreeMap;

use figment::value::{Dict, Value};

/// One axis of the product: `keys` are set together, one row of `rows` per position.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Dotted key paths set by this axis.
    pub keys: Vec<String>,
    /// `rows[i][k]` is the value of `keys[k]` at position `i`.
    pub rows: Vec<Vec<Value>>,
}

/// A problem in the `[sweep]` table: (dotted key under `sweep`, message).
pub type SweepProblem = (String, String);

/// Flattens nested tables into dotted keys (`slm.lr = [..]` and `"slm.lr" = [..]` mean the same).
fn flatten(prefix: &str, dict: &Dict, out: &mut Vec<(String, Value)>) {
    for (key, value) in dict {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Value::Dict(_, inner) => flatten(&path, inner, out),
            other => out.push((path, other.clone())),
        }
    }
}

fn as_list(key: &str, value: &Value) -> Result<Vec<Value>, SweepProblem> {
    match value {
        Value::Array(_, items) if !items.is_empty() => Ok(items.clone()),
        Value::Array(..) => Err((
            format!("sweep.{key}"),
            "a sweep list must have at least one value".into(),
        )),
        _ => Err((
            format!("sweep.{key}"),
            "expected a list of values to sweep over".into(),
        )),
    }
}

/// Reads the axes of a `[sweep]` table.
pub fn axes(sweep: &BTreeMap<String, Value>) -> Result<Vec<Axis>, SweepProblem> {
    let mut result = Vec::new();
    let mut plain = Dict::new();
    for (key, value) in sweep {
        if key != "zip" {
            plain.insert(key.clone(), value.clone());
            continue;
        }
        let Value::Array(_, groups) = value else {
            return Err((
                "sweep.zip".into(),
                "expected [[sweep.zip]] tables of equal-length lists".into(),
            ));
        };
        for (g, group) in groups.iter().enumerate() {
            let Value::Dict(_, dict) = group else {
                return Err((
                    format!("sweep.zip[{g}]"),
                    "expected a table of equal-length lists".into(),
                ));
            };
            let mut entries = Vec::new();
            flatten("", dict, &mut entries);
            let mut keys = Vec::new();
            let mut columns = Vec::new();
            for (key, value) in &entries {
                keys.push(key.clone());
                columns.push(as_list(&format!("zip[{g}].{key}"), value)?);
            }
            let len = columns.first().map_or(0, Vec::len);
            if let Some((k, c)) = keys.iter().zip(&columns).find(|(_, c)| c.len() != len) {
                return Err((
                    format!("sweep.zip[{g}].{k}"),
                    format!(
                        "zipped lists must have equal lengths: `{}` has {len}, `{k}` has {}",
                        keys[0],
                        c.len()
                    ),
                ));
            }
            if keys.is_empty() {
                continue;
            }
            let rows = (0..len)
                .map(|i| columns.iter().map(|c| c[i].clone()).collect())
                .collect();
            result.push(Axis { keys, rows });
        }
    }
    let mut entries = Vec::new();
    flatten("", &plain, &mut entries);
    for (key, value) in entries {
        let rows = as_list(&key, &value)?
            .into_iter()
            .map(|v| vec![v])
            .collect();
        result.push(Axis {
            keys: vec![key],
            rows,
        });
    }
    let mut seen = BTreeMap::new();
    for axis in &result {
        for key in &axis.keys {
            if seen.insert(key.clone(), ()).is_some() {
                return Err((
                    format!("sweep.{key}"),
                    "the key is swept twice (once plainly and once in a zip, or in two zips)"
                        .into(),
                ));
            }
        }
    }
    Ok(result)
}

/// The cartesian product of the axes: one list of (key, value) assignments per cell, in a stable
/// order (the first axis varies slowest).
pub fn expand(axes: &[Axis]) -> Vec<Vec<(String, Value)>> {
    let mut cells: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for axis in axes {
        let mut next = Vec::with_capacity(cells.len() * axis.rows.len());
        for cell in &cells {
            for row in &axis.rows {
                let mut assigned = cell.clone();
                assigned.extend(axis.keys.iter().cloned().zip(row.iter().cloned()));
                next.push(assigned);
            }
        }
        cells = next;
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep_from(toml_text: &str) -> BTreeMap<String, Value> {
        let table: toml::Table = toml_text.parse().unwrap();
        table
            .into_iter()
            .map(|(k, v)| (k, Value::serialize(v).unwrap()))
            .collect()
    }

    #[test]
    fn two_values_times_three_seeds_is_six_cells() {
        let sweep = sweep_from("seed = [1, 2, 3]\n\"slm.lr\" = [1e-5, 3e-5]\n");
        let cells = expand(&axes(&sweep).unwrap());
        assert_eq!(cells.len(), 6);
        let distinct: std::collections::BTreeSet<String> =
            cells.iter().map(|c| format!("{c:?}")).collect();
        assert_eq!(distinct.len(), 6);
    }

    #[test]
    fn nested_keys_equal_quoted_dotted_keys() {
        let a = axes(&sweep_from("slm.lr = [1, 2]\n")).unwrap();
        let b = axes(&sweep_from("\"slm.lr\" = [1, 2]\n")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].keys, vec!["slm.lr".to_string()]);
    }

    #[test]
    fn zip_pairs_values_instead_of_crossing() {
        let sweep = sweep_from(
            "seed = [1, 2]\n[[zip]]\n\"slm.lr\" = [1, 2, 3]\n\"slm.epochs\" = [4, 5, 6]\n",
        );
        let cells = expand(&axes(&sweep).unwrap());
        assert_eq!(cells.len(), 6);
        for cell in &cells {
            let lr = cell
                .iter()
                .find(|(k, _)| k == "slm.lr")
                .unwrap()
                .1
                .to_i128();
            let ep = cell
                .iter()
                .find(|(k, _)| k == "slm.epochs")
                .unwrap()
                .1
                .to_i128();
            assert_eq!(ep.unwrap() - lr.unwrap(), 3);
        }
    }

    #[test]
    fn unequal_zip_and_scalar_are_rejected() {
        let err = axes(&sweep_from("[[zip]]\na = [1, 2]\nb = [1]\n")).unwrap_err();
        assert!(err.0.contains("zip[0].b"), "{err:?}");
        let err = axes(&sweep_from("seed = 3\n")).unwrap_err();
        assert_eq!(err.0, "sweep.seed");
        let err = axes(&sweep_from("seed = []\n")).unwrap_err();
        assert!(err.1.contains("at least one"));
    }
}
