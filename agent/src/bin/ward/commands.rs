//! What each subcommand does.

use std::time::{SystemTime, UNIX_EPOCH};

use tonic::Code;
use ward_agent::{client, doctor};
use ward_proto::v1::{self as pb, object, subject};

use crate::{
    args::{
        AuditCommand, Cli, Command, ExplainArgs, GrantArgs, PolicyCommand, RequestArgs,
        SubjectArgs, TargetArgs,
    },
    exit, render,
};

pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl From<tonic::Status> for CliError {
    fn from(s: tonic::Status) -> Self {
        let code = match s.code() {
            Code::PermissionDenied | Code::Unauthenticated => exit::NOT_ALLOWED,
            Code::InvalidArgument | Code::AlreadyExists | Code::FailedPrecondition => exit::INVALID,
            Code::NotFound => exit::NOT_FOUND,
            Code::Unavailable => exit::DAEMON_DOWN,
            _ => exit::ERROR,
        };
        let message = match s.code() {
            Code::PermissionDenied => format!("not allowed: {}", s.message()),
            Code::InvalidArgument => format!("invalid: {}", s.message()),
            _ => s.message().to_owned(),
        };
        CliError { code, message }
    }
}

impl From<client::ConnectError> for CliError {
    fn from(e: client::ConnectError) -> Self {
        CliError {
            code: exit::DAEMON_DOWN,
            message: e.to_string(),
        }
    }
}

pub fn usage(message: impl Into<String>) -> CliError {
    CliError {
        code: exit::INVALID,
        message: message.into(),
    }
}

pub async fn run(cli: Cli) -> Result<u8, CliError> {
    if let Command::Doctor { json } = cli.command {
        let code = doctor::print(&doctor::run(), json).map_err(|e| usage(e.to_string()))?;
        return Ok(code as u8);
    }
    if let Command::Policy(PolicyCommand::Check {
        files,
        directory,
        labels,
        json,
    }) = &cli.command
    {
        return check_policy(files, directory.as_deref(), labels, *json);
    }
    if let Command::Audit {
        action: Some(AuditCommand::Verify { files, json }),
        ..
    } = &cli.command
    {
        return verify_audit(files, *json);
    }
    if let Some(code) = coordinator_command(&cli).await? {
        return Ok(code);
    }
    let mut agent = client::connect(&cli.socket).await?;
    match cli.command {
        Command::Doctor { .. } => unreachable!("handled above"),
        Command::Status { json } => {
            let s = agent
                .get_status(pb::GetStatusRequest {})
                .await?
                .into_inner();
            render::status(&s, json);
        }
        Command::Grants { all, json } => {
            let grants = all_pages(|page_token| {
                let mut agent = agent.clone();
                async move {
                    let page = agent
                        .list_grants(pb::ListGrantsRequest {
                            all,
                            page_token,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    Ok((page.grants, page.next_page_token))
                }
            })
            .await?;
            render::grants(&grants, json);
        }
        Command::Grant(args) => {
            let json = args.json;
            let grant = build_grant(args)?;
            let r = agent
                .push_grant(pb::PushGrantRequest {
                    grant: Some(grant),
                    ..Default::default()
                })
                .await?
                .into_inner();
            render::pushed(&r, json);
        }
        Command::Revoke { id, reason, json } => {
            let r = agent
                .revoke_grant(pb::RevokeGrantRequest { id, reason })
                .await?
                .into_inner();
            if let Some(rec) = r.record {
                render::revoked(&rec, json);
            }
        }
        Command::Events {
            follow,
            recent,
            json,
        } => {
            let mut stream = agent
                .watch_events(pb::WatchEventsRequest { recent, follow })
                .await?
                .into_inner();
            while let Some(e) = stream.message().await? {
                render::event(&e, json);
            }
        }
        Command::Explain(args) => return explain(&mut agent, args).await,
        Command::Policy(PolicyCommand::Check { .. }) => unreachable!("handled above"),
        Command::Request(_)
        | Command::Requests { .. }
        | Command::Approve { .. }
        | Command::Deny { .. }
        | Command::Release { .. }
        | Command::Audit { .. }
        | Command::Login { .. }
        | Command::Logout { .. }
        | Command::Whoami { .. } => unreachable!("handled by coordinator_command"),
        Command::Policy(PolicyCommand::Apply { json }) => {
            let s = agent
                .apply_policy(pb::ApplyPolicyRequest {})
                .await?
                .into_inner();
            render::policy_applied(&s, json);
        }
        Command::Policy(PolicyCommand::Show { full, json }) => {
            let s = agent
                .get_policy(pb::GetPolicyRequest {})
                .await?
                .into_inner();
            render::policy(&s, full, json);
        }
    }
    Ok(exit::OK)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn pb_subject(s: &SubjectArgs) -> pb::Subject {
    let kind = if let Some(u) = &s.user {
        subject::Kind::User(u.clone())
    } else if let Some(uid) = s.uid {
        subject::Kind::Uid(uid)
    } else {
        subject::Kind::Workload(s.workload.clone().unwrap_or_default())
    };
    pb::Subject { kind: Some(kind) }
}

fn path_object(p: &str) -> pb::Object {
    let kind = if p.ends_with('/') {
        object::Kind::PathPrefix(p.to_owned())
    } else {
        object::Kind::Path(p.to_owned())
    };
    pb::Object { kind: Some(kind) }
}

/// The operations and objects a grant or request names.
fn targets(a: &TargetArgs) -> Result<(Vec<i32>, Vec<pb::Object>), CliError> {
    let mut ops = Vec::new();
    let mut objects: Vec<pb::Object> = Vec::new();
    let mut add = |op: pb::Operation, objs: Vec<pb::Object>| {
        if !objs.is_empty() {
            ops.push(op as i32);
            for o in objs {
                if !objects.contains(&o) {
                    objects.push(o);
                }
            }
        }
    };
    add(
        pb::Operation::Read,
        a.read.iter().map(|p| path_object(p)).collect(),
    );
    add(
        pb::Operation::Write,
        a.write.iter().map(|p| path_object(p)).collect(),
    );
    add(
        pb::Operation::Exec,
        a.exec
            .iter()
            .map(|p| pb::Object {
                kind: Some(object::Kind::Executable(p.clone())),
            })
            .collect(),
    );
    add(
        pb::Operation::Connect,
        a.connect
            .iter()
            .map(|n| pb::Object {
                kind: Some(object::Kind::Network(n.clone())),
            })
            .collect(),
    );
    if ops.is_empty() {
        return Err(usage(
            "name what to grant: --read, --write, --exec or --connect",
        ));
    }
    Ok((ops, objects))
}

fn build_grant(a: GrantArgs) -> Result<pb::Grant, CliError> {
    let (ops, objects) = targets(&a.targets)?;
    let now = now_ms();
    let id =
        a.id.unwrap_or_else(|| format!("g-{:x}-{:x}", now, std::process::id()));
    Ok(pb::Grant {
        id,
        subject: Some(pb_subject(&a.subject)),
        operations: ops,
        objects,
        not_before_unix_ms: 0,
        expires_at_unix_ms: now + a.duration.as_millis() as i64,
        reason: a.reason,
        ticket: a.ticket.unwrap_or_default(),
        approvers: Vec::new(),
        issuer: format!("ward-cli:uid:{}", nix::unistd::getuid()),
        ..Default::default()
    })
}

async fn explain(
    agent: &mut ward_proto::v1::agent_client::AgentClient<tonic::transport::Channel>,
    a: ExplainArgs,
) -> Result<u8, CliError> {
    let s = &a.subject;
    let subject = if s.user.is_some() || s.uid.is_some() || s.workload.is_some() {
        Some(pb_subject(&SubjectArgs {
            user: s.user.clone(),
            uid: s.uid,
            workload: s.workload.clone(),
        }))
    } else {
        None
    };
    let t = &a.target;
    let (op, object) = if let Some(p) = &t.read {
        (pb::Operation::Read, p)
    } else if let Some(p) = &t.write {
        (pb::Operation::Write, p)
    } else if let Some(p) = &t.exec {
        (pb::Operation::Exec, p)
    } else if let Some(n) = &t.connect {
        (pb::Operation::Connect, n)
    } else {
        return Err(usage("name one of --read, --write, --exec, --connect"));
    };
    let r = agent
        .explain(pb::ExplainRequest {
            subject,
            operation: op as i32,
            object: object.clone(),
            login_uid: a.login_uid,
            cgroup: a.in_cgroup.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    render::explanation(&r, a.json);
    Ok(if r.allowed { exit::OK } else { exit::DENIED })
}

/// `ward policy check`: everything the agent would refuse, without it.
fn check_policy(
    files: &[std::path::PathBuf],
    directory: Option<&std::path::Path>,
    labels: &[String],
    json: bool,
) -> Result<u8, CliError> {
    use ward_policy::{Clock, Compiler, Directory, Policies};
    let mut env_labels = std::collections::BTreeMap::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| usage(format!("--label `{l}`: expected KEY=VALUE")))?;
        env_labels.insert(k.to_owned(), v.to_owned());
    }
    let policies = match Policies::load(files) {
        Ok(p) => p,
        Err(errors) => {
            render::policy_errors(&errors, json);
            return Ok(exit::INVALID);
        }
    };
    let compiled = match directory {
        None => None,
        Some(d) => {
            let dir = Directory::load(d).map_err(|e| CliError {
                code: exit::INVALID,
                message: e.to_string(),
            })?;
            ward_agent::daemon::policy::check_resources(&dir).map_err(|e| CliError {
                code: exit::INVALID,
                message: e.to_string(),
            })?;
            let env = ward_agent::daemon::policy::host_env(&env_labels, true);
            Some(Compiler::new(policies.clone(), dir, env, &Clock::system()))
        }
    };
    render::policy_checked(&policies, compiled.as_ref(), json);
    Ok(exit::OK)
}

use crate::login::coordinator;

/// The verbs the coordinator answers; `None` when this is not one.
async fn coordinator_command(cli: &Cli) -> Result<Option<u8>, CliError> {
    let c = &cli.coordinator;
    match &cli.command {
        Command::Login { issuer, json } => {
            return crate::login::login(c, issuer.as_deref(), *json)
                .await
                .map(Some);
        }
        Command::Logout { local, json } => {
            return crate::login::logout(c, *local, *json).await.map(Some);
        }
        Command::Whoami { json } => {
            let me = coordinator(c)
                .await?
                .who_am_i(pb::WhoAmIRequest {})
                .await?
                .into_inner();
            render::identity(&me, *json);
        }
        Command::Request(a) => {
            let r = coordinator(c)
                .await?
                .create_request(request(a)?)
                .await?
                .into_inner();
            render::access_request(&r, a.json);
        }
        Command::Requests {
            mine,
            pending,
            json,
        } => {
            let client = coordinator(c).await?;
            let (mine, pending) = (*mine, *pending);
            let requests = all_pages(|page_token| {
                let mut client = client.clone();
                async move {
                    let page = client
                        .list_requests(pb::ListRequestsRequest {
                            mine,
                            pending,
                            page_token,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    Ok((page.requests, page.next_page_token))
                }
            })
            .await?;
            render::access_requests(&requests, *json);
        }
        Command::Approve { id, reason, json } => {
            let r = coordinator(c)
                .await?
                .approve(pb::ReviewRequest {
                    id: id.clone(),
                    reason: reason.clone(),
                })
                .await?
                .into_inner();
            render::access_request(&r, *json);
        }
        Command::Deny { id, reason, json } => {
            let r = coordinator(c)
                .await?
                .deny(pb::ReviewRequest {
                    id: id.clone(),
                    reason: reason.clone(),
                })
                .await?
                .into_inner();
            render::access_request(&r, *json);
        }
        Command::Release { id, json } => {
            let r = coordinator(c)
                .await?
                .release(pb::EndRequest {
                    id: id.clone(),
                    reason: "released with ward release".into(),
                })
                .await?
                .into_inner();
            render::access_request(&r, *json);
        }
        Command::Revoke { id, reason, json } if c.coordinator.is_some() => {
            let r = coordinator(c)
                .await?
                .revoke(pb::EndRequest {
                    id: id.clone(),
                    reason: reason.clone(),
                })
                .await?
                .into_inner();
            render::access_request(&r, *json);
        }
        Command::Audit { since, json, .. } => {
            let since_ms = now_ms() - since.as_millis() as i64;
            let client = coordinator(c).await?;
            let entries = all_pages(|page_token| {
                let mut client = client.clone();
                async move {
                    let page = client
                        .audit(pb::AuditRequest {
                            since_unix_ms: since_ms,
                            page_token,
                            ..Default::default()
                        })
                        .await?
                        .into_inner();
                    Ok((page.entries, page.next_page_token))
                }
            })
            .await?;
            render::audit(&entries, *json);
        }
        _ => return Ok(None),
    }
    Ok(Some(exit::OK))
}

fn request(a: &RequestArgs) -> Result<pb::CreateRequestRequest, CliError> {
    let (operations, objects) = targets(&a.targets)?;
    let (mut hosts, mut host_labels) = (Vec::new(), Vec::new());
    for on in &a.on {
        match on.split_once('=') {
            Some(("host", name)) => hosts.push(name.to_owned()),
            Some((k, v)) if !k.is_empty() && !v.is_empty() => host_labels.push(on.clone()),
            _ => {
                return Err(usage(format!(
                    "--on `{on}`: expected host=NAME or KEY=VALUE"
                )));
            }
        }
    }
    Ok(pb::CreateRequestRequest {
        operations,
        objects,
        hosts,
        host_labels,
        duration_ms: a.duration.as_millis() as i64,
        reason: a.reason.clone(),
        ticket: a.ticket.clone().unwrap_or_default(),
        not_before_unix_ms: a.at.map_or(0, |t| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        }),
        workload: a.workload.clone().unwrap_or_default(),
    })
}

/// `ward audit verify`: each file set's chain, checked locally.
fn verify_audit(files: &[std::path::PathBuf], json: bool) -> Result<u8, CliError> {
    let mut reports = Vec::new();
    for f in files {
        let v = ward_agent::daemon::audit::verify(f).map_err(|e| CliError {
            code: exit::NOT_FOUND,
            message: format!("{}: {e}", f.display()),
        })?;
        reports.push((f.clone(), v));
    }
    render::audit_verified(&reports, json);
    Ok(if reports.iter().any(|(_, v)| v.broken.is_some()) {
        exit::TAMPERED
    } else {
        exit::OK
    })
}

/// Every page of a paged listing: servers read at most 1,000 items per
/// call and hand back `next_page_token` while there may be more.
async fn all_pages<T, F, Fut>(mut fetch: F) -> Result<Vec<T>, CliError>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, String), tonic::Status>>,
{
    let (mut items, mut token) = (Vec::new(), String::new());
    loop {
        let (page, next) = fetch(token).await?;
        items.extend(page);
        if next.is_empty() {
            return Ok(items);
        }
        token = next;
    }
}
