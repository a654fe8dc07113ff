//! `[cron.NAME]`: the app's scheduled jobs. Only the reading and the
//! checking of schedules and time zones live here (croner for the
//! patterns, jiff's time-zone database for the zones), so the manifest and
//! the scheduler agree on what a schedule means.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One `[cron.NAME]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CronJob {
    /// Standard cron syntax, 5 fields (minute precision) or 6 with
    /// seconds first; `@hourly`, `@daily`, `@weekly`, `@monthly`,
    /// `@yearly` too.
    pub schedule: String,
    /// The zone the schedule is read in (an IANA name such as
    /// "Europe/Paris"); UTC when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Run by `sh -c` in the live release's folder and environment.
    pub command: String,
    /// A run still going after this is stopped (its whole process group).
    #[serde(default = "default_timeout", with = "crate::duration")]
    pub timeout: Duration,
    /// A tick that comes while the previous run still runs: skipped
    /// (recorded as such) or queued behind it.
    #[serde(default)]
    pub overlap: Overlap,
    /// Ticks that came while Baton was not running: the latest one run
    /// once if it is at most an hour old (`run_once`), or none (`skip`).
    #[serde(default)]
    pub missed: Missed,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10 * 60)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    #[default]
    Skip,
    Queue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Missed {
    Skip,
    #[default]
    RunOnce,
}

/// Longest schedule text read.
const MAX_SCHEDULE: usize = 256;

/// Reads a schedule the one way Baton does: 5 fields, or 6 with seconds
/// first, or an `@` shorthand; never a year field.
pub fn parse_schedule(text: &str) -> Result<croner::Cron, String> {
    if text.len() > MAX_SCHEDULE {
        return Err(format!(
            "is {} bytes long; a schedule is 5 or 6 short fields",
            text.len()
        ));
    }
    let fields = text.split_whitespace().count();
    if !text.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
        return Err(format!(
            "{text:?} has {fields} fields; write 5 (\"*/5 * * * *\": minute hour day month weekday) or 6 with seconds first (\"*/2 * * * * *\"), or @hourly, @daily, @weekly, @monthly"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| {
            format!(
                "{text:?} is not a cron schedule ({e}); write it like \"*/5 * * * *\" (minute hour day month weekday), \"0 3 * * MON\" or @daily"
            )
        })
}

/// The time zone of a job (`None`: UTC).
pub fn parse_timezone(name: Option<&str>) -> Result<jiff::tz::TimeZone, String> {
    match name {
        None => Ok(jiff::tz::TimeZone::UTC),
        Some(name) => jiff::tz::TimeZone::get(name).map_err(|_| {
            format!("{name:?} is not a time zone Baton knows: use an IANA name such as \"Europe/Paris\" or \"America/New_York\", or leave it out for UTC")
        }),
    }
}

impl CronJob {
    /// The parsed schedule and zone (checked when the manifest was read).
    pub fn schedule(&self) -> Result<(croner::Cron, jiff::tz::TimeZone), String> {
        Ok((
            parse_schedule(&self.schedule)?,
            parse_timezone(self.timezone.as_deref())?,
        ))
    }

    /// Each problem as (field under `cron.NAME`, reason).
    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        parse_schedule(&self.schedule).map_err(|r| ("schedule", r))?;
        parse_timezone(self.timezone.as_deref()).map_err(|r| ("timezone", r))?;
        if self.command.trim().is_empty() {
            return Err((
                "command",
                "is empty: give the command the job runs, e.g. command = \"python3 manage.py clearsessions\"".into(),
            ));
        }
        if self.command.len() > 64 * 1024 {
            return Err((
                "command",
                "is longer than 64 KiB: put the script in the release and run it".into(),
            ));
        }
        if self.timeout.is_zero() {
            return Err(("timeout", "must be longer than zero".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_of_five_and_six_fields_and_shorthands_are_read() {
        for ok in [
            "*/5 * * * *",
            "*/2 * * * * *",
            "0 3 * * MON",
            "@hourly",
            "@daily",
        ] {
            assert!(parse_schedule(ok).is_ok(), "{ok}");
        }
        for bad in [
            "* * * *",
            "61 * * * *",
            "* * * * * * 2030",
            "every minute",
            "",
        ] {
            assert!(parse_schedule(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_zones_are_iana_names() {
        assert!(parse_timezone(Some("Europe/Paris")).is_ok());
        assert!(parse_timezone(None).is_ok());
        let e = parse_timezone(Some("Mars/Olympus")).unwrap_err();
        assert!(e.contains("IANA"), "{e}");
    }
}
