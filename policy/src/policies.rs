//! Policy files: parsed, named, validated against ward's schema, and
//! checked for what the kernel table can express. Every error carries the
//! file, line and column, and the policy id.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::Path,
    time::Duration,
};

use cedar_policy::{Policy, PolicyId, PolicySet, ValidationMode, Validator};
use miette::Diagnostic;

use crate::{
    footprint::{self, Footprint},
    schema::{CONTEXT_ATTRS, schema},
};

/// 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    pub(crate) fn of_offset(text: &str, offset: usize) -> Position {
        let before = &text[..offset.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        Position { line, column }
    }
}

/// One problem in the policies, located.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, thiserror::Error)]
pub struct PolicyError {
    pub file: String,
    pub position: Option<Position>,
    pub policy: Option<String>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        if let Some(id) = &self.policy {
            write!(f, ": policy `{id}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What ward knows about one policy.
#[derive(Debug, Clone)]
pub struct PolicyInfo {
    pub id: String,
    pub file: String,
    pub position: Position,
    pub permit: bool,
    pub(crate) footprint: Footprint,
    /// `@max_duration`, for `request` permits.
    pub max_duration: Option<Duration>,
    /// `@approvals`, for `request` permits: reviewers needed (default 1).
    pub approvals: Option<u32>,
    /// `@reason("optional")` on a `request` permit waives the reason.
    pub reason_optional: bool,
    /// The policy's text, as written.
    pub text: String,
}

/// A checked policy set: parsed and validated against ward's schema, and
/// ready for the [`Compiler`](crate::Compiler) to evaluate.
#[derive(Debug, Clone)]
pub struct Policies {
    pub(crate) set: PolicySet,
    /// What ward knows of each policy, by id.
    pub info: BTreeMap<String, PolicyInfo>,
    /// Everything the policies read, merged.
    pub(crate) footprint: Footprint,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            set: PolicySet::new(),
            info: BTreeMap::new(),
            footprint: Footprint::default(),
        }
    }
}

/// A Cedar error's message with its causes and help, on one line.
pub(crate) fn full_message(e: &(dyn Diagnostic + 'static)) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        src = s.source();
    }
    if let Some(help) = e.help() {
        msg.push_str(&format!(" (help: {help})"));
    }
    msg
}

fn first_offset(e: &dyn Diagnostic) -> Option<usize> {
    e.labels()?.map(|l| l.offset()).min()
}

impl Policies {
    /// Reads and checks policy files; `ward policy check`.
    pub fn load(paths: &[impl AsRef<Path>]) -> Result<Policies, Vec<PolicyError>> {
        let mut sources = Vec::new();
        let mut errors = Vec::new();
        for p in paths {
            let p = p.as_ref();
            match std::fs::read_to_string(p) {
                Ok(text) => sources.push((p.display().to_string(), text)),
                Err(e) => errors.push(PolicyError {
                    file: p.display().to_string(),
                    position: None,
                    policy: None,
                    message: format!("cannot read: {e}"),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Policies::parse(&sources)
    }

    /// Checks policy sources given as (file name, text).
    pub fn parse(sources: &[(String, String)]) -> Result<Policies, Vec<PolicyError>> {
        let mut errors = Vec::new();
        let mut set = PolicySet::new();
        let mut info = BTreeMap::new();
        for (file, text) in sources {
            let parsed: PolicySet = match text.parse() {
                Ok(s) => s,
                Err(e) => {
                    let e: cedar_policy::ParseErrors = e;
                    for err in e.iter() {
                        errors.push(PolicyError {
                            file: file.clone(),
                            position: first_offset(err).map(|o| Position::of_offset(text, o)),
                            policy: None,
                            message: full_message(err),
                        });
                    }
                    continue;
                }
            };
            if let Some(t) = parsed.templates().next() {
                errors.push(PolicyError {
                    file: file.clone(),
                    position: None,
                    policy: Some(t.id().to_string()),
                    message:
                        "templates (?principal, ?resource) are not supported; write static policies"
                            .into(),
                });
            }
            let stem = Path::new(file)
                .file_stem()
                .map_or_else(|| file.clone(), |s| s.to_string_lossy().into_owned());
            // Policies in source order, so generated ids follow the file.
            let mut policies: Vec<&Policy> = parsed.policies().collect();
            let mut search_from = 0;
            let mut located = Vec::new();
            policies.sort_by_key(|p| {
                p.id()
                    .to_string()
                    .trim_start_matches("policy")
                    .parse::<usize>()
                    .unwrap_or(0)
            });
            for (n, p) in policies.into_iter().enumerate() {
                let ptext = p.to_cedar().unwrap_or_default();
                let offset = text[search_from..]
                    .find(ptext.as_str())
                    .map(|o| o + search_from)
                    .unwrap_or(0);
                search_from = offset + ptext.len();
                located.push((n, p, offset, ptext));
            }
            for (n, p, offset, ptext) in located {
                let id = p
                    .annotation("id")
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{stem}:{n}"));
                let position = Position::of_offset(text, offset);
                let err = |at: Option<usize>, message: String| PolicyError {
                    file: file.clone(),
                    position: Some(Position::of_offset(text, offset + at.unwrap_or(0))),
                    policy: Some(id.clone()),
                    message,
                };
                if info.contains_key(&id) {
                    errors.push(err(
                        None,
                        format!("the id `{id}` is used twice; ids must be unique across files"),
                    ));
                    continue;
                }
                let fp = footprint::of_policy(&p.to_json().unwrap_or_default());
                if fp.time.unbounded_minute {
                    errors.push(err(
                        ptext.find("minute_of_day"),
                        "context.minute_of_day can only be compared with a number literal \
                         (e.g. context.minute_of_day < 1080): the compiler must know where the window ends"
                            .into(),
                    ));
                }
                if fp.time.whole_context {
                    errors.push(err(
                        ptext.find("context"),
                        "use context's attributes one by one (context.hour, context.host.labels, ...)".into(),
                    ));
                }
                let max_duration = match p.annotation("max_duration") {
                    None => None,
                    Some(s) => match humantime::parse_duration(s) {
                        Ok(d) if !d.is_zero() => Some(d),
                        _ => {
                            errors.push(err(
                                ptext.find("@max_duration"),
                                format!("@max_duration(\"{s}\") is not a duration like 30m or 8h"),
                            ));
                            None
                        }
                    },
                };
                let approvals = match p.annotation("approvals") {
                    None => None,
                    Some(s) => match s.parse::<u32>() {
                        Ok(n) if n <= 10 => Some(n),
                        _ => {
                            errors.push(err(
                                ptext.find("@approvals"),
                                format!("@approvals(\"{s}\") is not a number from 0 to 10"),
                            ));
                            None
                        }
                    },
                };
                let reason_optional = match p.annotation("reason") {
                    None | Some("required") => false,
                    Some("optional") => true,
                    Some(other) => {
                        errors.push(err(
                            ptext.find("@reason"),
                            format!("@reason(\"{other}\"): expected \"optional\" or \"required\""),
                        ));
                        false
                    }
                };
                let policy = p.new_id(PolicyId::new(&id));
                if let Err(e) = set.add(policy) {
                    errors.push(err(None, e.to_string()));
                    continue;
                }
                info.insert(
                    id.clone(),
                    PolicyInfo {
                        id,
                        file: file.clone(),
                        position,
                        permit: p.effect() == cedar_policy::Effect::Permit,
                        footprint: fp,
                        max_duration,
                        approvals,
                        reason_optional,
                        text: ptext,
                    },
                );
            }
        }
        let texts: BTreeMap<&str, &str> = sources
            .iter()
            .map(|(f, t)| (f.as_str(), t.as_str()))
            .collect();
        let validation = Validator::new(schema().clone()).validate(&set, ValidationMode::Strict);
        for e in validation.validation_errors() {
            let id = e.policy_id().to_string();
            let file = info.get(&id).map(|i| i.file.clone()).unwrap_or_default();
            let position = first_offset(e)
                .zip(texts.get(file.as_str()))
                .map(|(o, t)| Position::of_offset(t, o));
            let mut message = full_message(e);
            if message.contains("context") && message.contains("not found") {
                message.push_str(&format!(
                    "; the kernel never sees it: ward's context has only {}",
                    CONTEXT_ATTRS.join(", ")
                ));
            }
            errors.push(PolicyError {
                file,
                position,
                policy: Some(id),
                message,
            });
        }
        for i in info.values() {
            if (i.max_duration.is_some() || i.approvals.is_some()) && !i.permit {
                errors.push(PolicyError {
                    file: i.file.clone(),
                    position: Some(i.position),
                    policy: Some(i.id.clone()),
                    message:
                        "@max_duration and @approvals belong on a permit for the request action"
                            .into(),
                });
            }
        }
        if !errors.is_empty() {
            let order = |e: &PolicyError| {
                (
                    e.file.clone(),
                    e.position.map(|p| (p.line, p.column)),
                    e.message.clone(),
                )
            };
            errors.sort_by_key(order);
            // The validator reports a bad attribute once per action that
            // could reach it; one report per place is enough.
            errors.dedup_by(|a, b| {
                a.file == b.file && a.position == b.position && a.policy == b.policy
            });
            return Err(errors);
        }
        let mut footprint = Footprint::default();
        for i in info.values() {
            footprint.merge(&i.footprint);
        }
        Ok(Policies {
            set,
            info,
            footprint,
        })
    }

    /// Whether some policy may tell two hosts with the same labels and
    /// posture apart (it reads the host's name): if none does, a decision
    /// for one host is the decision for every host like it.
    pub fn reads_host_name(&self) -> bool {
        self.footprint.host_name
    }

    /// Ids of the policies that read the clock.
    pub(crate) fn time_dependent(&self) -> BTreeSet<&str> {
        self.info
            .values()
            .filter(|i| i.footprint.time.any())
            .map(|i| i.id.as_str())
            .collect()
    }

    /// Whether some forbid reads the clock.
    pub(crate) fn has_time_dependent_forbid(&self) -> bool {
        self.info
            .values()
            .any(|i| !i.permit && i.footprint.time.any())
    }

    pub fn len(&self) -> usize {
        self.info.len()
    }

    pub fn is_empty(&self) -> bool {
        self.info.is_empty()
    }
}
