//! Loading a spec: the root file and every file its `$ref`s name, parsed into JSON values, and
//! `$ref` resolution across them. Nothing is fetched over the network.

use serde_json::Value;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A problem with a spec, located by file and JSON pointer (or line and column for syntax).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    pub file: PathBuf,
    /// JSON pointer into the file (`/paths/~1users/get`), empty for the whole file.
    pub pointer: String,
    pub message: String,
}

impl SpecError {
    pub fn new(file: &Path, pointer: &str, message: impl Into<String>) -> Self {
        SpecError {
            file: file.to_path_buf(),
            pointer: pointer.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(
                f,
                "{}: at #{}: {}",
                self.file.display(),
                self.pointer,
                self.message
            )
        }
    }
}

/// OpenAPI major.minor the spec declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    V30,
    V31,
}

/// The spec's files, keyed by canonical path.
pub struct Docs {
    pub root: PathBuf,
    pub version: Version,
    files: HashMap<PathBuf, Value>,
}

/// Escape a key for use in a JSON pointer.
pub fn esc(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn parse_file(path: &Path) -> Result<Value, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::new(path, "", format!("cannot read: {e}")))?;
    parse_text(&text, path)
}

/// Parse spec text: JSON when it looks like JSON, YAML otherwise.
pub fn parse_text(text: &str, path: &Path) -> Result<Value, SpecError> {
    let json = text.trim_start().starts_with('{')
        || path.extension().and_then(|e| e.to_str()) == Some("json");
    if json {
        serde_json::from_str::<Value>(text).map_err(|e| {
            SpecError::new(
                path,
                "",
                format!("line {} column {}: {e}", e.line(), e.column()),
            )
        })
    } else {
        serde_saphyr::from_str::<Value>(text)
            .map_err(|e| SpecError::new(path, "", format!("invalid YAML: {e}")))
    }
}

fn decode_fragment(frag: &str) -> String {
    percent_encoding::percent_decode_str(frag)
        .decode_utf8_lossy()
        .into_owned()
}

impl Docs {
    /// Load `path` and every file reachable through `$ref`.
    pub fn load(path: &Path) -> Result<Docs, Vec<SpecError>> {
        let root = std::fs::canonicalize(path)
            .map_err(|e| vec![SpecError::new(path, "", format!("cannot read: {e}"))])?;
        let value = parse_file(&root).map_err(|e| vec![e])?;
        Self::from_value(root, value)
    }

    /// Build from an already parsed root document (tests, generated specs).
    pub fn from_value(root: PathBuf, value: Value) -> Result<Docs, Vec<SpecError>> {
        let version = match value.get("openapi").and_then(Value::as_str) {
            Some(v) if v.starts_with("3.0.") || v == "3.0" => Version::V30,
            Some(v) if v.starts_with("3.1.") || v == "3.1" => Version::V31,
            Some(v) => {
                return Err(vec![SpecError::new(
                    &root,
                    "/openapi",
                    format!("OpenAPI version `{v}` is not supported (3.0.x and 3.1.x are)"),
                )])
            }
            None => {
                let msg = if value.get("swagger").is_some() {
                    "Swagger 2.0 is not supported: convert the spec to OpenAPI 3 first"
                } else {
                    "not an OpenAPI document: the `openapi` version field is missing"
                };
                return Err(vec![SpecError::new(&root, "", msg)]);
            }
        };
        let mut docs = Docs {
            root: root.clone(),
            version,
            files: HashMap::new(),
        };
        docs.files.insert(root.clone(), value);
        let mut errors = Vec::new();
        let mut queue = vec![root];
        while let Some(file) = queue.pop() {
            let mut refs = Vec::new();
            if let Some(v) = docs.files.get(&file) {
                collect_refs(v, "", &mut refs);
            }
            for (ptr, r) in refs {
                let file_part = r.split('#').next().unwrap_or("");
                if file_part.is_empty() {
                    continue;
                }
                if file_part.contains("://") {
                    errors.push(SpecError::new(
                        &file,
                        &ptr,
                        format!(
                            "$ref `{r}` points at a remote document; Rampart never fetches \
                             specs over the network: save it next to the spec and refer to the file"
                        ),
                    ));
                    continue;
                }
                let target = file.parent().unwrap_or(Path::new(".")).join(
                    percent_encoding::percent_decode_str(file_part)
                        .decode_utf8_lossy()
                        .as_ref(),
                );
                let canon = match std::fs::canonicalize(&target) {
                    Ok(c) => c,
                    Err(e) => {
                        errors.push(SpecError::new(
                            &file,
                            &ptr,
                            format!("$ref `{r}`: cannot read {}: {e}", target.display()),
                        ));
                        continue;
                    }
                };
                if docs.files.contains_key(&canon) {
                    continue;
                }
                match parse_file(&canon) {
                    Ok(v) => {
                        docs.files.insert(canon.clone(), v);
                        queue.push(canon);
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        if errors.is_empty() {
            Ok(docs)
        } else {
            Err(errors)
        }
    }

    pub fn root_value(&self) -> &Value {
        self.files.get(&self.root).unwrap_or(&Value::Null)
    }

    /// The value at a (decoded) JSON pointer in a loaded file.
    pub fn at(&self, file: &Path, pointer: &str) -> Option<&Value> {
        self.files.get(file)?.pointer(pointer)
    }

    /// Resolve a `$ref` written in `file` to (target file, pointer, value).
    pub fn resolve<'a>(
        &'a self,
        file: &Path,
        reference: &str,
    ) -> Result<(PathBuf, String, &'a Value), String> {
        let (file_part, frag) = match reference.split_once('#') {
            Some((f, p)) => (f, p),
            None => (reference, ""),
        };
        let target = if file_part.is_empty() {
            file.to_path_buf()
        } else {
            let joined = file.parent().unwrap_or(Path::new(".")).join(
                percent_encoding::percent_decode_str(file_part)
                    .decode_utf8_lossy()
                    .as_ref(),
            );
            std::fs::canonicalize(&joined).map_err(|e| format!("$ref `{reference}`: {e}"))?
        };
        let doc = self
            .files
            .get(&target)
            .ok_or_else(|| format!("$ref `{reference}`: file not loaded"))?;
        let pointer = decode_fragment(frag);
        if !pointer.is_empty() && !pointer.starts_with('/') {
            return Err(format!(
                "$ref `{reference}`: only JSON-pointer fragments (`#/...`) are supported"
            ));
        }
        let v = doc
            .pointer(&pointer)
            .ok_or_else(|| format!("$ref `{reference}` points at nothing"))?;
        Ok((target, pointer, v))
    }

    /// Follow `$ref`s from a value (a parameter, a response, a schema) to the object they
    /// name. Returns the file and pointer of the final object too.
    pub fn deref<'a>(
        &'a self,
        file: &Path,
        pointer: &str,
        mut v: &'a Value,
    ) -> Result<(PathBuf, String, &'a Value), SpecError> {
        let mut file = file.to_path_buf();
        let mut pointer = pointer.to_string();
        for _ in 0..32 {
            match v.get("$ref").and_then(Value::as_str) {
                Some(r) => {
                    let (f, p, t) = self
                        .resolve(&file, r)
                        .map_err(|m| SpecError::new(&file, &pointer, m))?;
                    file = f;
                    pointer = p;
                    v = t;
                }
                None => return Ok((file, pointer, v)),
            }
        }
        Err(SpecError::new(&file, &pointer, "$ref chain longer than 32"))
    }
}

fn collect_refs(v: &Value, ptr: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Value::String(s) = x {
                        out.push((ptr.to_string(), s.clone()));
                    }
                } else {
                    collect_refs(x, &format!("{ptr}/{}", esc(k)), out);
                }
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect_refs(x, &format!("{ptr}/{i}"), out);
            }
        }
        _ => {}
    }
}
