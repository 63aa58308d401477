//! The page's HTML. maud escapes everything it interpolates; nothing here
//! builds markup from strings. Regions marked `data-live` are replaced in
//! place when something changes (`ward.js`); each has a stable id.

use std::time::{Duration, UNIX_EPOCH};

use maud::{DOCTYPE, Markup, html};
use ward_proto::{text, v1 as pb};

use super::auth::Signed;
use crate::workflow::state_name;

/// The tabs, in order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tab {
    Pending,
    Active,
    Mine,
    Audit,
    /// A page that is not a tab (a request's details).
    None,
}

const TABS: [(Tab, &str, &str); 4] = [
    (Tab::Pending, "/pending", "To review"),
    (Tab::Active, "/active", "Active access"),
    (Tab::Mine, "/mine", "My requests"),
    (Tab::Audit, "/audit", "History"),
];

fn when(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

fn span(ms: i64) -> String {
    humantime::format_duration(Duration::from_secs((ms.max(0) / 1000) as u64)).to_string()
}

/// A time with its distance from now, kept current by the script.
fn moment(ms: i64) -> Markup {
    html! {
        @if ms > 0 {
            time datetime=(when(ms)) data-at=(ms) title=(when(ms)) { (when(ms)) }
        } @else { "-" }
    }
}

fn what(r: &pb::AccessRequest) -> String {
    let ops: Vec<&str> = r.operations.iter().map(|o| text::operation(*o)).collect();
    let objects: Vec<String> = r.objects.iter().map(text::object).collect();
    format!("{} on {}", ops.join(", "), objects.join(", "))
}

fn approvals(r: &pb::AccessRequest) -> String {
    let n = r.reviews.iter().filter(|v| v.approve).count();
    format!("{n} of {}", r.approvals_required)
}

/// The whole document around a page's content.
pub(crate) fn frame(title: &str, tab: Tab, who: Option<&Signed>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · ward" }
                link rel="stylesheet" href="/static/ward.css";
                script src="/static/ward.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    a class="brand" href="/" { "ward" }
                    @if let Some(who) = who {
                        nav aria-label="Main" {
                            ul {
                                @for (t, href, label) in TABS {
                                    li {
                                        @if t == tab {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        form class="signout" method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(who.csrf);
                            button type="submit" { "Sign out " (who.name) }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    p id="stale" class="notice" hidden role="status" {
                        "This page changed while you were typing. "
                        a href="" { "Reload" } " to see it."
                    }
                    (content)
                }
            }
        }
    }
}

pub(crate) fn sign_in(issuer: &str, error: Option<&str>) -> Markup {
    frame(
        "Sign in",
        Tab::None,
        None,
        html! {
            @if let Some(e) = error {
                p class="error" role="alert" { (e) }
            }
            p { "Review and approve access requests for the hosts ward protects." }
            p { a class="button" href="/login" { "Sign in with " (issuer) } }
        },
    )
}

pub(crate) fn error(title: &str, message: &str, who: Option<&Signed>) -> Markup {
    frame(
        title,
        Tab::None,
        who,
        html! { p class="error" role="alert" { (message) } p { a href="/" { "Back" } } },
    )
}

/// A table of requests; `columns` picks the optional ones.
fn requests_table(id: &str, caption: &str, list: &[pb::AccessRequest], left: bool) -> Markup {
    html! {
        div id=(id) data-live aria-live="polite" {
            @if list.is_empty() {
                p class="empty" { "Nothing here." }
            } @else {
                table {
                    caption { (caption) " (" (list.len()) ")" }
                    thead { tr {
                        th scope="col" { "Request" }
                        th scope="col" { "Requester" }
                        th scope="col" { "Access" }
                        th scope="col" { "Hosts" }
                        th scope="col" { "For" }
                        th scope="col" { "Reason" }
                        th scope="col" { "State" }
                        th scope="col" { "Approvals" }
                        @if left { th scope="col" { "Ends" } }
                    } }
                    tbody {
                        @for r in list {
                            tr {
                                td data-label="Request" { a href={ "/requests/" (r.id) } { (r.id) } }
                                td data-label="Requester" { (r.requester) }
                                td data-label="Access" { (what(r)) }
                                td data-label="Hosts" { (r.hosts.join(", ")) }
                                td data-label="For" { (span(r.duration_ms)) }
                                td data-label="Reason" { (r.reason) }
                                td data-label="State" { span class={ "state " (state_name(r.state)) } { (state_name(r.state)) } }
                                td data-label="Approvals" { (approvals(r)) }
                                @if left { td data-label="Ends" { (moment(r.expires_at_unix_ms)) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn pending(who: &Signed, list: &[pb::AccessRequest]) -> Markup {
    frame(
        "To review",
        Tab::Pending,
        Some(who),
        requests_table("pending", "Requests waiting for your review", list, false),
    )
}

pub(crate) fn active(who: &Signed, list: &[pb::AccessRequest]) -> Markup {
    frame(
        "Active access",
        Tab::Active,
        Some(who),
        html! {
            p { "Open a request to revoke it." }
            (requests_table("active", "Access in force now", list, true))
        },
    )
}

pub(crate) fn mine(who: &Signed, list: &[pb::AccessRequest]) -> Markup {
    frame(
        "My requests",
        Tab::Mine,
        Some(who),
        html! {
            p { "Ask with " code { "ward request" } ". Open one to release it early." }
            (requests_table("mine", "Your requests", list, true))
        },
    )
}

/// What a request's page shows.
pub(crate) struct Detail {
    pub req: pb::AccessRequest,
    pub groups: Vec<String>,
    pub attributes: Vec<(String, String)>,
    pub may_decide: bool,
    pub may_revoke: bool,
    pub mine: bool,
    pub others: Vec<String>,
    pub more_others: bool,
}

pub(crate) fn request(
    who: &Signed,
    d: &Detail,
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    let r = &d.req;
    let state = state_name(r.state);
    let active = state == "approved";
    frame(
        &format!("Request {}", r.id),
        Tab::None,
        Some(who),
        html! {
            @if let Some(e) = error { p class="error" role="alert" { (e) } }
            @if let Some(n) = notice { p class="notice" role="status" { (n) } }
            div id="detail" data-live aria-live="polite" {
                dl class="facts" {
                    dt { "State" } dd { span class={ "state " (state) } { (state) } }
                    dt { "Requester" } dd { (r.requester) }
                    dt { "Their groups" } dd { @if d.groups.is_empty() { "-" } @else { (d.groups.join(", ")) } }
                    dt { "Their attributes" } dd {
                        @if d.attributes.is_empty() { "-" }
                        @for (k, v) in &d.attributes { span class="attr" { (k) " = " (v) } " " }
                    }
                    dt { "Operations" } dd { (r.operations.iter().map(|o| text::operation(*o)).collect::<Vec<_>>().join(", ")) }
                    dt { "Objects" } dd { ul { @for o in &r.objects { li { code { (text::object(o)) } } } } }
                    @if !r.workload.is_empty() { dt { "For workload" } dd { code { (r.workload) } } }
                    dt { "Hosts" } dd { (r.hosts.join(", ")) }
                    dt { "Duration" } dd { (span(r.duration_ms)) }
                    dt { "Starts" } dd { @if r.not_before_unix_ms > 0 { (moment(r.not_before_unix_ms)) } @else { "when approved" } }
                    dt { "Reason" } dd { (r.reason) }
                    dt { "Ticket" } dd { @if r.ticket.is_empty() { "-" } @else { (r.ticket) } }
                    dt { "Decided by policies" } dd { @if r.policies.is_empty() { "-" } @else { (r.policies.join(", ")) } }
                    dt { "Approvals" } dd { (approvals(r)) " needed" }
                    dt { "Others who may approve" } dd {
                        @if d.others.is_empty() { "nobody else" } @else { (d.others.join(", ")) }
                        @if d.more_others { ", and more" }
                    }
                    dt { "Asked" } dd { (moment(r.created_unix_ms)) }
                    @if r.expires_at_unix_ms > 0 { dt { "Access ends" } dd { (moment(r.expires_at_unix_ms)) } }
                    @if r.ended_unix_ms > 0 { dt { "Ended" } dd { (moment(r.ended_unix_ms)) } }
                }
                h2 { "Reviews" }
                @if r.reviews.is_empty() { p class="empty" { "No reviews yet." } }
                @else {
                    ul class="reviews" {
                        @for v in &r.reviews {
                            li {
                                strong { (v.reviewer) }
                                @if v.approve { " approved" } @else { " denied" }
                                " " (moment(v.time_unix_ms))
                                @if !v.reason.is_empty() { ": " q { (v.reason) } }
                            }
                        }
                    }
                }
            }
            div id="actions" data-live {
                @if d.may_decide && state == "pending" {
                    form method="post" action={ "/requests/" (r.id) "/review" } class="decide" {
                        input type="hidden" name="csrf" value=(who.csrf);
                        label for="comment" { "Comment (required to deny)" }
                        textarea id="comment" name="comment" rows="3" maxlength="1024" {}
                        div class="buttons" {
                            button type="submit" name="decision" value="approve" class="approve" { "Approve" }
                            button type="submit" name="decision" value="deny" class="deny" { "Deny" }
                        }
                    }
                }
                @if d.may_revoke && (active || state == "pending") {
                    form method="post" action={ "/requests/" (r.id) "/revoke" } class="end" {
                        input type="hidden" name="csrf" value=(who.csrf);
                        label for="revoke-reason" { "Why revoke" }
                        input id="revoke-reason" name="reason" type="text" maxlength="1024";
                        button type="submit" class="deny" { "Revoke" }
                    }
                }
                @if d.mine && (active || state == "pending") {
                    form method="post" action={ "/requests/" (r.id) "/release" } class="end" {
                        input type="hidden" name="csrf" value=(who.csrf);
                        button type="submit" { "Release my access" }
                    }
                }
            }
        },
    )
}

/// The audit page's filters, as the form sent them.
#[derive(Default, serde::Deserialize)]
pub(crate) struct AuditFilter {
    #[serde(default)]
    pub requester: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub since: String,
}

pub(crate) const SINCE: [(&str, &str); 4] = [
    ("1h", "last hour"),
    ("24h", "last day"),
    ("7d", "last week"),
    ("30d", "last 30 days"),
];

const STATES: [&str; 6] = [
    "pending", "approved", "denied", "expired", "released", "revoked",
];

pub(crate) fn audit(who: &Signed, f: &AuditFilter, entries: &[pb::AuditEntry]) -> Markup {
    frame(
        "History",
        Tab::Audit,
        Some(who),
        html! {
            form method="get" action="/audit" class="filters" role="search" {
                label { "Requester " input name="requester" type="text" value=(f.requester); }
                label { "Host " input name="host" type="text" value=(f.host); }
                label { "State "
                    select name="state" {
                        option value="" { "any" }
                        @for s in STATES { option value=(s) selected[f.state == s] { (s) } }
                    }
                }
                label { "Since "
                    select name="since" {
                        @for (v, label) in SINCE { option value=(v) selected[f.since == v] { (label) } }
                    }
                }
                button type="submit" { "Filter" }
            }
            div id="audit" data-live aria-live="polite" {
                @if entries.is_empty() { p class="empty" { "No entries." } }
                @else {
                    table {
                        caption { "Audit trail (" (entries.len()) ")" }
                        thead { tr {
                            th scope="col" { "Time" } th scope="col" { "Request" } th scope="col" { "Who" }
                            th scope="col" { "What" } th scope="col" { "Detail" }
                        } }
                        tbody {
                            @for e in entries {
                                tr {
                                    td data-label="Time" { (moment(e.time_unix_ms)) }
                                    td data-label="Request" {
                                        @if e.request_id.is_empty() { "-" }
                                        @else { a href={ "/requests/" (e.request_id) } { (e.request_id) } }
                                    }
                                    td data-label="Who" { (e.actor) }
                                    td data-label="What" { (e.kind) }
                                    td data-label="Detail" { (e.detail) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
