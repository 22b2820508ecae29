//! Decoding errors that name the field at fault by its path (`ports[0].host_port`).

use std::fmt;

use serde_path_to_error::Segment;

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input is not JSON (the path is empty).
    Syntax(String),
    /// A required field is absent (or `null`).
    Missing,
    /// A key no field matches, in a type that refuses unknown keys.
    UnknownField,
    /// A value of the wrong type or out of range.
    Invalid(String),
}

/// A decoding error and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    path: String,
    kind: ErrorKind,
}

impl Error {
    /// Path of the field at fault, in the decoded type's field names: `ports[0].host_port`;
    /// empty for the whole document.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The message without the path: `missing`, `unknown field`, or the type error.
    pub fn message(&self) -> &str {
        match &self.kind {
            ErrorKind::Syntax(m) | ErrorKind::Invalid(m) => m,
            ErrorKind::Missing => "missing",
            ErrorKind::UnknownField => "unknown field",
        }
    }

    /// True when the input was not JSON at all.
    pub fn is_syntax(&self) -> bool {
        matches!(self.kind, ErrorKind::Syntax(_))
    }

    pub(crate) fn syntax(e: serde_json::Error) -> Self {
        Error {
            path: String::new(),
            kind: ErrorKind::Syntax(e.to_string()),
        }
    }

    pub(crate) fn at(e: serde_path_to_error::Error<DeError>) -> Self {
        let mut path = String::new();
        for seg in e.path().iter() {
            match seg {
                Segment::Seq { index } => path.push_str(&format!("[{index}]")),
                Segment::Map { key } | Segment::Enum { variant: key } => push_key(&mut path, key),
                Segment::Unknown => {}
            }
        }
        let kind = match e.into_inner() {
            DeError::Custom(m) => ErrorKind::Invalid(m),
            DeError::Missing(field) => {
                push_key(&mut path, field);
                ErrorKind::Missing
            }
            DeError::Unknown(field) => {
                if !path.ends_with(&field) {
                    push_key(&mut path, &field);
                }
                ErrorKind::UnknownField
            }
        };
        Error { path, kind }
    }
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(self.message())
        } else {
            write!(f, "{}: {}", self.path, self.message())
        }
    }
}

impl std::error::Error for Error {}

/// The error type the deserializer works with; [`Error`] adds the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeError {
    /// A type or value error, as serde words it.
    Custom(String),
    /// A required field is absent.
    Missing(&'static str),
    /// A key no field matches (`deny_unknown_fields`).
    Unknown(String),
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeError::Custom(m) => f.write_str(m),
            DeError::Missing(field) => write!(f, "missing field `{field}`"),
            DeError::Unknown(field) => write!(f, "unknown field `{field}`"),
        }
    }
}

impl std::error::Error for DeError {}

impl serde::de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::Custom(msg.to_string())
    }
    fn missing_field(field: &'static str) -> Self {
        DeError::Missing(field)
    }
    fn unknown_field(field: &str, _expected: &'static [&'static str]) -> Self {
        DeError::Unknown(field.to_string())
    }
}
