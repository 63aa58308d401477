//! The environment a decision is made in: local time, the host's labels,
//! its posture, and the instants where a time-based decision can change.

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use cedar_policy::{Context, RestrictedExpression};

use crate::footprint::TimeUse;

/// Local wall-clock fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Local {
    pub hour: i64,
    pub minute_of_day: i64,
    /// 0 = Monday .. 6 = Sunday.
    pub weekday: u8,
}

pub(crate) const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Turns an instant into local time.
pub trait LocalTime: Send + Sync + std::fmt::Debug {
    fn local(&self, t: SystemTime) -> Local;
}

/// The host's time zone (`TZ`, else /etc/localtime; UTC without either).
#[derive(Debug, Clone, Copy, Default)]
pub struct HostZone;

impl LocalTime for HostZone {
    fn local(&self, t: SystemTime) -> Local {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as libc::time_t);
        // SAFETY: localtime_r only writes the tm we own.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
        if !ok {
            return FixedOffset(0).local(t);
        }
        Local {
            hour: tm.tm_hour as i64,
            minute_of_day: (tm.tm_hour * 60 + tm.tm_min) as i64,
            weekday: ((tm.tm_wday + 6) % 7) as u8,
        }
    }
}

/// A fixed offset from UTC, in seconds; tests use it.
#[derive(Debug, Clone, Copy)]
pub struct FixedOffset(pub i64);

impl LocalTime for FixedOffset {
    fn local(&self, t: SystemTime) -> Local {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
            + self.0;
        let day_secs = secs.rem_euclid(86_400);
        let days = secs.div_euclid(86_400);
        Local {
            hour: day_secs / 3600,
            minute_of_day: day_secs / 60,
            // 1970-01-01 was a Thursday.
            weekday: ((days + 3).rem_euclid(7)) as u8,
        }
    }
}

/// "Now", and how to read it locally. Tests move `now` by hand.
#[derive(Debug, Clone)]
pub struct Clock {
    pub now: SystemTime,
    pub zone: Arc<dyn LocalTime>,
}

impl Clock {
    pub fn system() -> Clock {
        Clock {
            now: SystemTime::now(),
            zone: Arc::new(HostZone),
        }
    }

    pub fn at(now: SystemTime, zone: Arc<dyn LocalTime>) -> Clock {
        Clock { now, zone }
    }
}

/// The host side of the context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub host: String,
    /// From the agent's config, e.g. env = "prod".
    pub labels: BTreeMap<String, String>,
    /// Posture: BPF LSM enforces file and exec rules here.
    pub file_enforcement: bool,
    pub kernel: String,
}

impl Env {
    /// The Cedar context at `t`; `operation` is set for `request`.
    pub(crate) fn context(
        &self,
        local: Local,
        operation: Option<&str>,
        requester: Option<cedar_policy::EntityUid>,
    ) -> Context {
        let s = |v: &str| RestrictedExpression::new_string(v.to_owned());
        let host = RestrictedExpression::new_record([
            ("name".to_owned(), s(&self.host)),
            (
                "labels".to_owned(),
                RestrictedExpression::new_set(
                    self.labels.iter().map(|(k, v)| s(&format!("{k}={v}"))),
                ),
            ),
        ])
        .expect("distinct keys");
        let posture = RestrictedExpression::new_record([
            (
                "file_enforcement".to_owned(),
                RestrictedExpression::new_bool(self.file_enforcement),
            ),
            ("kernel".to_owned(), s(&self.kernel)),
        ])
        .expect("distinct keys");
        let mut pairs = vec![
            (
                "hour".to_owned(),
                RestrictedExpression::new_long(local.hour),
            ),
            (
                "minute_of_day".to_owned(),
                RestrictedExpression::new_long(local.minute_of_day),
            ),
            (
                "day_of_week".to_owned(),
                s(DAYS[local.weekday as usize % 7]),
            ),
            ("host".to_owned(), host),
            ("posture".to_owned(), posture),
        ];
        if let Some(op) = operation {
            pairs.push(("operation".to_owned(), s(op)));
        }
        if let Some(uid) = requester {
            pairs.push((
                "requester".to_owned(),
                RestrictedExpression::new_entity_uid(uid),
            ));
        }
        Context::from_pairs(pairs).expect("distinct keys")
    }
}

/// Time-based decisions repeat weekly, so a week ahead shows every change.
pub(crate) const HORIZON: Duration = Duration::from_secs(7 * 86_400);

/// The instants after `now` (within [`HORIZON`]) where what the policies
/// read of the clock changes: each is where the compiled table may change.
pub(crate) fn boundaries(time: &TimeUse, clock: &Clock) -> Vec<SystemTime> {
    if !time.any() {
        return Vec::new();
    }
    let seen = |l: Local| {
        (
            if time.hour { l.hour } else { -1 },
            if time.day_of_week {
                l.weekday as i64
            } else {
                -1
            },
            time.minutes.range(..=l.minute_of_day).count(),
        )
    };
    let start = clock
        .now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60 + 1);
    let mut out = Vec::new();
    let mut prev = seen(clock.zone.local(clock.now));
    for m in 0..HORIZON.as_secs() / 60 {
        let t = UNIX_EPOCH + Duration::from_secs((start + m) * 60);
        let cur = seen(clock.zone.local(t));
        if cur != prev {
            out.push(t);
            prev = cur;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_offsets_read_local_fields() {
        // 2026-11-30 is a Monday; 17:59:30 UTC.
        let t = UNIX_EPOCH + Duration::from_secs(1_796_061_570);
        let l = FixedOffset(0).local(t);
        assert_eq!(
            (l.hour, l.minute_of_day, DAYS[l.weekday as usize]),
            (17, 1079, "mon")
        );
        let l = FixedOffset(3600).local(t);
        assert_eq!((l.hour, DAYS[l.weekday as usize]), (18, "mon"));
    }

    #[test]
    fn boundaries_fall_where_a_literal_flips() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_061_570);
        let clock = Clock::at(t, Arc::new(FixedOffset(0)));
        let mut time = TimeUse::default();
        time.minutes.extend([540, 1080]);
        let b = boundaries(&time, &clock);
        // 18:00 today; midnight, where `minute_of_day >= 1080` turns
        // false again; then 09:00 tomorrow. Three a day, for a week.
        assert_eq!(b[0], UNIX_EPOCH + Duration::from_secs(1_796_061_600));
        assert_eq!(
            b[1].duration_since(b[0]).unwrap(),
            Duration::from_secs(6 * 3600)
        );
        assert_eq!(
            b[2].duration_since(b[1]).unwrap(),
            Duration::from_secs(9 * 3600)
        );
        assert_eq!(b.len(), 21);
    }
}
