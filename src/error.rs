//! The library's error type: every variant names the place (file, key, cell) and what was expected.

use std::path::PathBuf;

/// Errors raised by the freeal-bench library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong; `location` is `file:line` when known.
    #[error("{location}: key `{key}`: {message}")]
    Config {
        /// `path/to/file.toml:LINE`, or a description of the source (environment, --set).
        location: String,
        /// Dotted key path.
        key: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A data file could not be read or parsed.
    #[error("{path}:{line}: {message}")]
    Data {
        /// The data file.
        path: PathBuf,
        /// 1-based line (0 when the problem is not tied to a line).
        line: usize,
        /// What was wrong and what was expected.
        message: String,
    },
    /// An I/O failure on a named file.
    // The I/O error is in the message, not the source chain: the CLI prints the chain
    // (`{:#}`), which would say it twice, and `error.txt` keeps only the message.
    #[error("{path}: {error}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// A model (weights, tokenizer, config.json) could not be loaded or used.
    #[error("model {model}: {message}")]
    Model {
        /// Model name or directory.
        model: String,
        /// What went wrong and how to fix it.
        message: String,
    },
    /// Writing or reading result tables failed.
    #[error("results {path}: {message}")]
    Results {
        /// The results file or directory.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An LLM backend failed (after its retries) or answered something unusable.
    #[error("llm {backend}: {message}")]
    Llm {
        /// Backend and model id.
        backend: String,
        /// What went wrong and how to fix it.
        message: String,
    },
    /// A cell failed while running.
    #[error("cell {cell}: {message}")]
    Cell {
        /// Cell id and name.
        cell: String,
        /// What went wrong.
        message: String,
    },
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An LLM backend error.
    pub fn llm(backend: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Llm {
            backend: backend.into(),
            message: message.into(),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    /// Builds a data error.
    pub fn data(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            line,
            message: message.into(),
        }
    }

    /// Builds a model error.
    pub fn model(model: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Model {
            model: model.into(),
            message: message.into(),
        }
    }

    /// Builds a results error.
    pub fn results(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Results {
            path: path.into(),
            message: message.into(),
        }
    }
}
