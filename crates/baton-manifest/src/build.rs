//! `[build]`: the command a process release runs once, when it is created,
//! in its own folder (installing dependencies, compiling assets). What it
//! leaves there is part of the release from then on. Docker apps build
//! through their Dockerfile instead, so the section is refused with them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::RuntimeKind;

/// The longest a build may be given: a build that needs more is stuck.
const MAX_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// The longest command accepted (it is shown in logs and messages).
const MAX_COMMAND: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSection {
    /// Shell command run with `sh -c` in the release's folder, as the app
    /// user, with the manifest's `[env]`, e.g.
    /// `pip install -r requirements.txt --target .deps`.
    pub command: String,
    /// How long it may run before it is killed and the release refused.
    #[serde(default = "default_timeout", with = "super::duration")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(600)
}

/// What is wrong with a `[build]` section: the field and the reason.
pub(crate) fn check(build: &BuildSection, runtime: RuntimeKind) -> Result<(), (String, String)> {
    if runtime == RuntimeKind::Docker {
        return Err((
            "build".into(),
            "a Docker app builds through its Dockerfile (RUN steps); remove [build], or use the process runtime".into(),
        ));
    }
    if build.command.trim().is_empty() {
        return Err((
            "build.command".into(),
            "is empty: give the command that builds the release, e.g. command = \"pip install -r requirements.txt --target .deps\"".into(),
        ));
    }
    if build.command.len() > MAX_COMMAND {
        return Err((
            "build.command".into(),
            format!(
                "is {} bytes, over the {MAX_COMMAND} accepted: put the steps in a script in the app folder and run that",
                build.command.len()
            ),
        ));
    }
    if build.timeout.is_zero() || build.timeout > MAX_TIMEOUT {
        return Err((
            "build.timeout".into(),
            format!(
                "must be longer than zero and at most {}",
                humantime::format_duration(MAX_TIMEOUT)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{Manifest, ManifestError};

    const PROCESS: &str = "name = \"a\"\n[web]\ncommand = \"python3 app.py\"\n";

    #[test]
    fn a_build_command_parses_with_a_ten_minute_default() {
        let text = format!(
            "{PROCESS}[build]\ncommand = \"pip install -r requirements.txt --target .deps\"\n"
        );
        let build = Manifest::parse(&text, "baton.toml").unwrap().build.unwrap();
        assert_eq!(
            build.command,
            "pip install -r requirements.txt --target .deps"
        );
        assert_eq!(build.timeout, std::time::Duration::from_secs(600));
        let text = format!("{PROCESS}[build]\ncommand = \"make\"\ntimeout = \"30m\"\n");
        let build = Manifest::parse(&text, "baton.toml").unwrap().build.unwrap();
        assert_eq!(build.timeout, std::time::Duration::from_secs(1800));
    }

    #[test]
    fn a_docker_app_is_told_its_dockerfile_builds_it_at_the_line_of_build() {
        let text = "name = \"a\"\nruntime = \"docker\"\n\n[build]\ncommand = \"make\"\n";
        let err = Manifest::parse(text, "baton.toml").unwrap_err();
        match &err {
            ManifestError::Invalid {
                file,
                field,
                reason,
            } => {
                assert_eq!(file, "baton.toml:4:1");
                assert_eq!(field, "build");
                assert!(reason.contains("Dockerfile"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_empty_or_unbounded_build_is_refused_with_its_field() {
        for (section, field) in [
            ("command = \" \"", "build.command"),
            ("command = \"make\"\ntimeout = \"0s\"", "build.timeout"),
            ("command = \"make\"\ntimeout = \"3h\"", "build.timeout"),
        ] {
            let text = format!("{PROCESS}[build]\n{section}\n");
            match Manifest::parse(&text, "baton.toml") {
                Err(ManifestError::Invalid { field: f, .. }) => assert_eq!(f, field, "{section}"),
                other => panic!("{section}: {other:?}"),
            }
        }
        let long = format!("{PROCESS}[build]\ncommand = \"{}\"\n", "x".repeat(5000));
        assert!(Manifest::parse(&long, "baton.toml").is_err());
        let unknown = format!("{PROCESS}[build]\ncommand = \"make\"\nimage = \"x\"\n");
        let err = Manifest::parse(&unknown, "baton.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("build.image") || err.contains("image"),
            "{err}"
        );
    }
}
