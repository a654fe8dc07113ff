//! `baton init [DIR]`: a first `baton.toml` for an app folder, guessed from
//! what the folder holds (a Dockerfile, `requirements.txt` or
//! `pyproject.toml`, `package.json`, `Gemfile`, `go.mod`, `Cargo.toml`, a
//! `Procfile`), each guess said in a comment with its reason. [`look`] is
//! the only I/O (a bounded read of a few known files, never through a
//! link); [`manifest`] is pure: a [`Folder`] in, the manifest's text out,
//! always one that `Manifest::parse` accepts. It never deploys, and never
//! replaces a `baton.toml` unless told to.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use baton_manifest::FILE_NAME;

/// Files read for guessing, when present: settings files and the usual
/// names of an app's main file.
const READ: &[&str] = &[
    "Dockerfile",
    "Procfile",
    "requirements.txt",
    "pyproject.toml",
    "manage.py",
    "app.py",
    "main.py",
    "server.py",
    "wsgi.py",
    "asgi.py",
    "package.json",
    "server.js",
    "index.js",
    "app.js",
    "main.js",
    "Gemfile",
    "config.ru",
    "config/routes.rb",
    "config/application.rb",
    "app.rb",
    "server.rb",
    "main.rb",
    "go.mod",
    "main.go",
    "Cargo.toml",
    "src/main.rs",
];
/// The largest file read: settings and main files are small.
const MAX_READ: u64 = 256 * 1024;
/// Names listed at the folder's top, at most.
const MAX_NAMES: usize = 10_000;

/// What `baton init` knows of a folder.
#[derive(Debug, Clone, Default)]
pub struct Folder {
    /// The folder's own name.
    pub name: String,
    /// Names at the folder's top (files and folders).
    pub names: BTreeSet<String>,
    /// The text of those of [`READ`] that are regular files, by path.
    pub texts: BTreeMap<String, String>,
}

impl Folder {
    fn text(&self, path: &str) -> Option<&str> {
        self.texts.get(path).map(String::as_str)
    }
    fn has(&self, name: &str) -> bool {
        self.names.contains(name) || self.texts.contains_key(name)
    }
}

/// Reads what [`manifest`] needs from `dir`.
pub fn look(dir: &Path) -> Result<Folder> {
    let real = std::fs::canonicalize(dir)
        .with_context(|| format!("{}: cannot open the folder", dir.display()))?;
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut names = BTreeSet::new();
    let listing =
        std::fs::read_dir(&real).with_context(|| format!("{}: cannot list", dir.display()))?;
    for entry in listing.take(MAX_NAMES) {
        names.insert(entry?.file_name().to_string_lossy().into_owned());
    }
    let mut texts = BTreeMap::new();
    for path in READ {
        // Not a regular file (a link, a FIFO) or too large: not read.
        if let Ok(Some(text)) = baton_manifest::read_regular_file(&real.join(path), MAX_READ) {
            texts.insert(path.to_string(), text);
        }
    }
    Ok(Folder { name, names, texts })
}

/// A guessed setting and why it was guessed.
#[derive(Debug, Clone, PartialEq)]
struct Why<T> {
    value: T,
    why: String,
}

fn why<T>(value: T, why: impl Into<String>) -> Why<T> {
    Why {
        value,
        why: why.into(),
    }
}

/// Everything guessed about an app.
#[derive(Debug, Default)]
struct Guess {
    /// What kind of app it looks like ("Python (requirements.txt)").
    stack: String,
    docker: bool,
    command: Option<Why<String>>,
    build: Option<Why<String>>,
    env: Vec<Why<(String, String)>>,
    /// Lines written commented out, for the user to take or leave.
    env_hints: Vec<String>,
    port: Option<Why<u16>>,
    /// Things the user must check or do, said at the top.
    todo: Vec<String>,
}

/// The `baton.toml` for a folder, with its guesses in comments.
pub fn manifest(folder: &Folder) -> String {
    let name = app_name(&folder.name);
    let mut guess = if folder.has("Dockerfile") {
        docker(folder)
    } else if folder.has("requirements.txt") || folder.has("pyproject.toml") {
        python(folder)
    } else if folder.has("package.json") {
        node(folder)
    } else if folder.has("Gemfile") {
        ruby(folder)
    } else if folder.has("go.mod") {
        go(folder, &name)
    } else if folder.has("Cargo.toml") {
        rust(folder, &name)
    } else {
        Guess {
            stack: "nothing Baton recognises".into(),
            command: Some(why(
                "./start".to_string(),
                "TODO: no Dockerfile, requirements.txt, pyproject.toml, package.json, Gemfile, go.mod or Cargo.toml was found: write the command that starts the app on $PORT",
            )),
            ..Guess::default()
        }
    };
    if !guess.docker {
        if let Some(web) = procfile_web(folder) {
            guess.command = Some(why(web, "the Procfile's `web` line"));
        }
    }
    let others: Vec<&str> = [
        ("Dockerfile", "Dockerfile"),
        ("requirements.txt", "requirements.txt"),
        ("pyproject.toml", "pyproject.toml"),
        ("package.json", "package.json"),
        ("Gemfile", "Gemfile"),
        ("go.mod", "go.mod"),
        ("Cargo.toml", "Cargo.toml"),
    ]
    .into_iter()
    .filter(|(file, _)| folder.has(file) && !guess.stack.contains(file))
    .map(|(_, shown)| shown)
    .collect();
    render(folder, &name, &guess, &health(folder), &others)
}

/// An app name from a folder name: lower-case letters, digits and dashes,
/// starting with a letter, at most 63.
fn app_name(folder: &str) -> String {
    let mut name = String::new();
    for c in folder.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.is_empty() && !name.ends_with('-') {
            name.push('-');
        }
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert_str(0, "app-");
    }
    name.truncate(63);
    let name = name.trim_end_matches('-').to_string();
    if baton_manifest::is_name(&name) {
        name
    } else {
        "app".into()
    }
}

/// The `web:` line of a Heroku-style Procfile.
fn procfile_web(folder: &Folder) -> Option<String> {
    folder.text("Procfile")?.lines().find_map(|line| {
        let command = line.trim().strip_prefix("web:")?.trim();
        (!command.is_empty()).then(|| command.to_string())
    })
}

/// The health path: a route the app's main files mention, else `/`.
fn health(folder: &Folder) -> Why<String> {
    let sources: Vec<(&String, &String)> = folder
        .texts
        .iter()
        .filter(|(path, _)| {
            [".py", ".js", ".go", ".rs", ".rb", ".ru"]
                .iter()
                .any(|ext| path.ends_with(ext))
        })
        .collect();
    for route in ["/healthz", "/health", "/up"] {
        for (path, text) in &sources {
            let quoted = [
                format!("\"{route}\""),
                format!("'{route}'"),
                format!("`{route}`"),
            ];
            // Rails 7.1's `get "up" => "rails/health#show"`.
            let rails = route == "/up" && text.contains("rails/health");
            if rails || quoted.iter().any(|q| text.contains(q.as_str())) {
                return why(route.to_string(), format!("{path} mentions {route}"));
            }
        }
    }
    why(
        "/".to_string(),
        "no health route found in the main files: / must answer 200 (or name the app's health route here)",
    )
}

/// The first of `names` the folder holds.
fn first<'a>(folder: &Folder, names: &[&'a str]) -> Option<&'a str> {
    names.iter().copied().find(|n| folder.has(n))
}

/// Says whether the app's main file reads `PORT`.
fn port_note(folder: &Folder, main: &str, guess: &mut Guess) {
    if folder.text(main).is_some_and(|t| !t.contains("PORT")) {
        guess.todo.push(format!(
            "{main} does not mention PORT: make the app listen on 127.0.0.1:$PORT, the port Baton gives each target"
        ));
    }
}

fn docker(folder: &Folder) -> Guess {
    let text = folder.text("Dockerfile").unwrap_or("");
    let exposed = text.lines().find_map(|line| {
        let line = line.trim();
        let rest = line
            .get(..7)
            .filter(|w| w.eq_ignore_ascii_case("EXPOSE "))
            .map(|_| &line[7..])?;
        rest.split_whitespace()
            .next()?
            .split('/')
            .next()?
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
    });
    Guess {
        stack: "Docker (Dockerfile)".into(),
        docker: true,
        port: Some(match exposed {
            Some(port) => why(
                port,
                format!("the Dockerfile's EXPOSE {port}; Baton also gives it as PORT"),
            ),
            None => why(
                8080,
                "no EXPOSE in the Dockerfile: the app must listen on this port (Baton gives it as PORT)",
            ),
        }),
        ..Guess::default()
    }
}

fn python(folder: &Folder) -> Guess {
    let deps = format!(
        "{}\n{}",
        folder.text("requirements.txt").unwrap_or(""),
        folder.text("pyproject.toml").unwrap_or("")
    )
    .to_ascii_lowercase();
    // Package names as written anywhere in either file: `uvicorn>=0.30`,
    // `"uvicorn[standard]"`, but not `gunicorn-extra` for gunicorn.
    let needs = |package: &str| {
        deps.split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
            .any(|word| word == package)
    };
    let mut guess = Guess::default();
    let pip = "python3 -m pip install --disable-pip-version-check --no-cache-dir";
    if folder.has("requirements.txt") {
        guess.stack = "Python (requirements.txt)".into();
        guess.build = Some(why(
            format!("{pip} -r requirements.txt --target .deps"),
            "requirements.txt lists the dependencies: pip installs them into .deps, once per release",
        ));
    } else {
        guess.stack = "Python (pyproject.toml)".into();
        guess.build = Some(why(
            format!("{pip} --target .deps ."),
            "pyproject.toml: pip installs the project and its dependencies into .deps, once per release",
        ));
    }
    guess.env.push(why(
        ("PYTHONPATH".into(), ".deps".into()),
        "where [build] installed the dependencies",
    ));
    guess.env.push(why(
        ("PYTHONUNBUFFERED".into(), "1".into()),
        "output reaches `baton logs` as it is printed",
    ));
    if folder.has("manage.py") {
        let settings = folder.text("manage.py").and_then(|text| {
            let at = text.find("DJANGO_SETTINGS_MODULE")?;
            let rest = &text[at..];
            let quoted = rest.split(['"', '\'']).nth(2)?;
            quoted.strip_suffix(".settings").map(str::to_string)
        });
        guess.command = Some(match (settings, needs("gunicorn")) {
            (Some(project), true) => why(
                format!("python3 -m gunicorn --bind 127.0.0.1:$PORT {project}.wsgi"),
                format!("Django (manage.py names {project}.settings), served by gunicorn from the dependencies"),
            ),
            _ => why(
                "python3 manage.py runserver 127.0.0.1:$PORT --noreload".to_string(),
                "Django (manage.py); its development server: add gunicorn to the dependencies for production",
            ),
        });
        return guess;
    }
    let Some(main) = first(
        folder,
        &["app.py", "main.py", "server.py", "wsgi.py", "asgi.py"],
    ) else {
        guess.command = Some(why(
            "python3 -u app.py".to_string(),
            "TODO: no app.py, main.py or server.py found: name the app's main file; it must listen on $PORT",
        ));
        return guess;
    };
    let module = main.trim_end_matches(".py");
    let text = folder.text(main).unwrap_or("");
    guess.command = Some(if needs("uvicorn") && text.contains("FastAPI(") {
        why(
            format!("python3 -m uvicorn {module}:app --host 127.0.0.1 --port $PORT"),
            format!("{main} makes a FastAPI app, served by uvicorn from the dependencies"),
        )
    } else if needs("gunicorn") && text.contains("Flask(") {
        why(
            format!("python3 -m gunicorn --bind 127.0.0.1:$PORT {module}:app"),
            format!("{main} makes a Flask app, served by gunicorn from the dependencies"),
        )
    } else if text.contains("Flask(") {
        why(
            format!("python3 -m flask --app {module} run --host 127.0.0.1 --port $PORT"),
            format!("{main} makes a Flask app; Flask's own server: add gunicorn for production"),
        )
    } else {
        port_note(folder, main, &mut guess);
        why(
            format!("python3 {main}"),
            format!("{main} looks like the app's main file; it must listen on $PORT"),
        )
    });
    guess
}

fn node(folder: &Folder) -> Guess {
    let package: serde_json::Value = folder
        .text("package.json")
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let script = |name: &str| package["scripts"][name].as_str().is_some();
    let (manager, install, why_install) = if folder.has("pnpm-lock.yaml") {
        ("pnpm", "pnpm install --frozen-lockfile", "pnpm-lock.yaml")
    } else if folder.has("yarn.lock") {
        ("yarn", "yarn install --frozen-lockfile", "yarn.lock")
    } else if folder.has("package-lock.json") || folder.has("npm-shrinkwrap.json") {
        (
            "npm",
            "npm ci",
            "package-lock.json: exactly the locked versions",
        )
    } else {
        (
            "npm",
            "npm install",
            "no lock file: add package-lock.json (npm install) for the same versions every time",
        )
    };
    let mut guess = Guess {
        stack: "Node.js (package.json)".into(),
        ..Guess::default()
    };
    guess.build = Some(if script("build") {
        why(
            format!("{install} && {manager} run build"),
            format!(
                "installs the dependencies ({why_install}), then runs package.json's build script"
            ),
        )
    } else {
        why(
            install.to_string(),
            format!("installs the dependencies ({why_install})"),
        )
    });
    guess.env_hints.push(
        "# NODE_ENV = \"production\"   # most frameworks want it; it applies to [build] too, where npm then leaves out devDependencies".into(),
    );
    let main_file = package["main"]
        .as_str()
        .map(|m| m.trim_start_matches("./").to_string())
        .or_else(|| {
            first(folder, &["server.js", "index.js", "app.js", "main.js"]).map(str::to_string)
        });
    guess.command = Some(if script("start") {
        why(
            format!("{manager} start"),
            "package.json's start script; the app must listen on $PORT",
        )
    } else if let Some(main) = main_file {
        port_note(folder, &main, &mut guess);
        why(
            format!("node {main}"),
            format!("{main} looks like the app's main file; it must listen on $PORT"),
        )
    } else {
        why(
            "node server.js".to_string(),
            "TODO: no start script and no main file found: write how the app starts on $PORT",
        )
    });
    guess
}

fn ruby(folder: &Folder) -> Guess {
    let mut guess = Guess {
        stack: "Ruby (Gemfile)".into(),
        build: Some(why(
            "bundle install".to_string(),
            "installs the Gemfile's gems into vendor/bundle (BUNDLE_PATH), once per release",
        )),
        ..Guess::default()
    };
    guess.env.push(why(
        ("BUNDLE_PATH".into(), "vendor/bundle".into()),
        "gems live in the release, not in the system",
    ));
    guess.env.push(why(
        ("BUNDLE_WITHOUT".into(), "development:test".into()),
        "only what production needs",
    ));
    if !folder.has("Gemfile.lock") {
        guess
            .todo
            .push("no Gemfile.lock: commit one (bundle lock) for the same gems every time".into());
    }
    guess.command = Some(if folder.has("config/application.rb") {
        guess.env_hints.push(
            "# RAILS_ENV = \"production\"   # then Rails needs SECRET_KEY_BASE (keep it out of this file)".into(),
        );
        why(
            "bundle exec rails server --binding 127.0.0.1 --port $PORT".to_string(),
            "Rails (config/application.rb)",
        )
    } else if folder.has("config.ru") {
        why(
            "bundle exec rackup --host 127.0.0.1 --port $PORT".to_string(),
            "a Rack app (config.ru)",
        )
    } else if let Some(main) = first(folder, &["app.rb", "server.rb", "main.rb"]) {
        port_note(folder, main, &mut guess);
        why(
            format!("bundle exec ruby {main}"),
            format!("{main} looks like the app's main file (no Rails, no config.ru); it must listen on $PORT"),
        )
    } else {
        why(
            "bundle exec ruby app.rb".to_string(),
            "TODO: no Rails, config.ru, app.rb, server.rb or main.rb found: write how the app starts on $PORT",
        )
    });
    guess
}

fn go(folder: &Folder, name: &str) -> Guess {
    let module = folder
        .text("go.mod")
        .and_then(|t| t.lines().find_map(|l| l.trim().strip_prefix("module ")))
        .map(|m| m.trim().trim_matches('"').to_string());
    let program = module
        .as_deref()
        .and_then(|m| m.rsplit('/').next())
        .map(app_name)
        .unwrap_or_else(|| name.to_string());
    let mut guess = Guess {
        stack: "Go (go.mod)".into(),
        build: Some(why(
            format!("go build -o bin/{program} ."),
            format!(
                "compiles the module{} into bin/{program} (go must be on the app user's PATH: /usr/local/go/bin is not)",
                module.map(|m| format!(" {m}")).unwrap_or_default()
            ),
        )),
        command: Some(why(
            format!("./bin/{program}"),
            "the program [build] compiled; it must listen on $PORT",
        )),
        ..Guess::default()
    };
    if folder.has("main.go") {
        port_note(folder, "main.go", &mut guess);
    } else {
        guess.todo.push(
            "no main.go at the folder's top: point `go build` at the main package (e.g. ./cmd/server)".into(),
        );
    }
    guess
}

fn rust(folder: &Folder, name: &str) -> Guess {
    let cargo: toml::Table = folder
        .text("Cargo.toml")
        .and_then(|t| t.parse().ok())
        .unwrap_or_default();
    let bin = cargo
        .get("bin")
        .and_then(|b| b.as_array())
        .and_then(|b| b.first())
        .and_then(|b| b.get("name"))
        .or_else(|| cargo.get("package").and_then(|p| p.get("name")))
        .and_then(|n| n.as_str())
        .filter(|n| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(str::to_string);
    let mut guess = Guess {
        stack: "Rust (Cargo.toml)".into(),
        ..Guess::default()
    };
    let program = bin.unwrap_or_else(|| {
        guess
            .todo
            .push("Cargo.toml names no package (a workspace?): name the program to run".into());
        name.to_string()
    });
    let locked = if folder.has("Cargo.lock") {
        " --locked"
    } else {
        guess
            .todo
            .push("no Cargo.lock: commit one for the same dependencies every time".into());
        ""
    };
    guess.build = Some(why(
        format!(
            "cargo build --release{locked} && mkdir -p bin && mv target/release/{program} bin/ && rm -rf target"
        ),
        format!("compiles bin/{program} and drops target/, which is large (cargo must be on the app user's PATH, not only in ~/.cargo/bin)"),
    ));
    guess.command = Some(why(
        format!("./bin/{program}"),
        "the program [build] compiled; it must listen on $PORT",
    ));
    if folder.has("src/main.rs") {
        port_note(folder, "src/main.rs", &mut guess);
    }
    guess
}

/// A TOML string.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn render(
    folder: &Folder,
    name: &str,
    guess: &Guess,
    health: &Why<String>,
    others: &[&str],
) -> String {
    let mut out = String::new();
    let mut line = |text: &str| {
        out.push_str(text);
        out.push('\n');
    };
    line(&format!(
        "# {FILE_NAME} for {name}, written by `baton init` from what {}/ holds: {}.",
        folder.name, guess.stack
    ));
    line("# Each setting below is a guess, with its reason; check them, then `baton deploy`.");
    if !others.is_empty() {
        line(&format!(
            "# Also found: {} (not used for these guesses).",
            others.join(", ")
        ));
    }
    for todo in &guess.todo {
        line(&format!("# TODO: {todo}"));
    }
    line("");
    line(&format!("name = {}   # the folder's name", quoted(name)));
    line(&format!(
        "hosts = [{}]   # add the app's real host names",
        quoted(&format!("{name}.localhost"))
    ));
    if guess.docker {
        line("runtime = \"docker\"   # the Dockerfile builds the image, once per release");
    }
    if let Some(command) = &guess.command {
        line("");
        line("[web]");
        line(&format!("# {}.", command.why));
        line(&format!("command = {}", quoted(&command.value)));
    }
    line("");
    line("[health]");
    line(&format!("# {}.", health.why));
    line(&format!("path = {}", quoted(&health.value)));
    if let Some(build) = &guess.build {
        line("");
        line("[build]");
        line("# Run once when a release is created, in its folder, as the app user, with [env]:");
        line(&format!("# {}.", build.why));
        line(&format!("command = {}", quoted(&build.value)));
    }
    if let Some(port) = &guess.port {
        line("");
        line("[docker]");
        line(&format!("# {}.", port.why));
        line(&format!("port = {}", port.value));
    }
    if !guess.env.is_empty() || !guess.env_hints.is_empty() {
        line("");
        line("[env]");
        for var in &guess.env {
            let (key, value) = &var.value;
            line(&format!("{key} = {}   # {}", quoted(value), var.why));
        }
        for hint in &guess.env_hints {
            line(hint);
        }
    }
    out
}

/// `baton init [DIR] [--force] [--print]`.
pub fn run(dir: &Path, force: bool, print: bool) -> Result<ExitCode> {
    // `baton init -` prints the current folder's manifest.
    let (dir, print) = if dir == Path::new("-") {
        (Path::new("."), true)
    } else {
        (dir, print)
    };
    let folder = look(dir)?;
    let text = manifest(&folder);
    // Never write what Baton itself would refuse.
    let parsed = baton_manifest::Manifest::parse(&text, FILE_NAME).map_err(|e| {
        anyhow::anyhow!("baton init guessed a manifest it cannot read ({e}); please report it")
    })?;
    if print {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let path = dir.join(FILE_NAME);
    if !force && std::fs::symlink_metadata(&path).is_ok() {
        anyhow::bail!(
            "{} exists already; `baton init --print {}` shows what it would write, `--force` replaces it",
            path.display(),
            dir.display()
        );
    }
    // Written beside and renamed: whole or not at all, and a link in its
    // place is replaced, never written through.
    let partial = dir.join(format!(".{FILE_NAME}.baton-init"));
    std::fs::write(&partial, &text)
        .and_then(|()| std::fs::rename(&partial, &path))
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })
        .with_context(|| format!("cannot write {}", path.display()))?;
    let built = parsed
        .build
        .as_ref()
        .map(|b| format!(", built with {:?}", b.command))
        .unwrap_or_default();
    println!(
        "{} {}: app {}, {} runtime{built}; check the guesses in its comments, then `baton deploy {}`",
        crate::output::green("Wrote"),
        path.display(),
        parsed.name,
        parsed.runtime.as_str(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_manifest::{Manifest, RuntimeKind};

    fn folder(name: &str, files: &[(&str, &str)]) -> Folder {
        let mut folder = Folder {
            name: name.into(),
            ..Folder::default()
        };
        for (path, text) in files {
            let top = path.split('/').next().unwrap_or(path);
            folder.names.insert(top.to_string());
            if READ.contains(path) {
                folder.texts.insert(path.to_string(), text.to_string());
            }
        }
        folder
    }

    /// The manifest for the folder, parsed as Baton will.
    fn parsed(folder: &Folder) -> (String, Manifest) {
        let text = manifest(folder);
        let parsed = Manifest::parse(&text, "baton.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        (text, parsed)
    }

    #[test]
    fn a_python_app_with_requirements_is_built_with_pip_into_deps() {
        let (text, m) = parsed(&folder(
            "My Shop",
            &[
                ("requirements.txt", "six==1.16.0\n"),
                (
                    "app.py",
                    "import os\nPORT = int(os.environ['PORT'])\n# serves \"/health\"\n",
                ),
            ],
        ));
        assert_eq!(m.name, "my-shop");
        assert_eq!(m.hosts, ["my-shop.localhost"]);
        assert_eq!(m.runtime, RuntimeKind::Process);
        assert_eq!(m.web.command, "python3 app.py");
        assert_eq!(m.health.path, "/health");
        let build = m.build.unwrap();
        assert!(
            build.command.contains("-r requirements.txt --target .deps"),
            "{}",
            build.command
        );
        assert_eq!(m.env["PYTHONPATH"], ".deps");
        assert!(
            text.contains("# requirements.txt lists the dependencies"),
            "{text}"
        );
        assert!(text.contains("app.py mentions /health"), "{text}");
        assert!(!text.contains("TODO"), "{text}");
    }

    #[test]
    fn python_frameworks_are_served_by_the_server_their_dependencies_name() {
        let (_, m) = parsed(&folder(
            "api",
            &[
                (
                    "pyproject.toml",
                    "[project]\ndependencies = [\"fastapi\", \"uvicorn>=0.30\"]\n",
                ),
                ("main.py", "from fastapi import FastAPI\napp = FastAPI()\n"),
            ],
        ));
        assert_eq!(
            m.web.command,
            "python3 -m uvicorn main:app --host 127.0.0.1 --port $PORT"
        );
        assert!(m.build.unwrap().command.ends_with("--target .deps ."));
        let (_, m) = parsed(&folder(
            "site",
            &[
                ("requirements.txt", "Django==5.0\ngunicorn==22.0\n"),
                (
                    "manage.py",
                    "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'site.settings')\n",
                ),
            ],
        ));
        assert_eq!(
            m.web.command,
            "python3 -m gunicorn --bind 127.0.0.1:$PORT site.wsgi"
        );
        // `gunicorn-extra` is not gunicorn.
        let (_, m) = parsed(&folder(
            "flaskapp",
            &[
                ("requirements.txt", "flask\ngunicorn-extra\n"),
                ("app.py", "from flask import Flask\napp = Flask(__name__)\n"),
            ],
        ));
        assert!(
            m.web.command.starts_with("python3 -m flask --app app run"),
            "{}",
            m.web.command
        );
    }

    #[test]
    fn a_node_app_installs_from_its_lock_file_and_starts_with_its_script() {
        let (text, m) = parsed(&folder(
            "web",
            &[
                (
                    "package.json",
                    r#"{"name": "web", "scripts": {"start": "node server.js", "build": "vite build"}}"#,
                ),
                ("package-lock.json", "{}"),
                (
                    "server.js",
                    "app.get('/healthz', ok); app.listen(process.env.PORT)",
                ),
            ],
        ));
        assert_eq!(m.web.command, "npm start");
        assert_eq!(m.build.unwrap().command, "npm ci && npm run build");
        assert_eq!(m.health.path, "/healthz");
        assert!(text.contains("# NODE_ENV"), "{text}");
        assert!(m.env.is_empty());
        let (text, m) = parsed(&folder(
            "bare",
            &[
                ("package.json", r#"{"main": "./index.js"}"#),
                ("index.js", "listen(3000)"),
            ],
        ));
        assert_eq!(m.web.command, "node index.js");
        assert_eq!(m.build.unwrap().command, "npm install");
        assert!(
            text.contains("TODO: index.js does not mention PORT"),
            "{text}"
        );
    }

    #[test]
    fn a_ruby_app_bundles_into_the_release() {
        let (_, m) = parsed(&folder(
            "blog",
            &[
                ("Gemfile", "gem 'rails'\n"),
                ("Gemfile.lock", ""),
                ("config/application.rb", "module Blog; end\n"),
                ("config/routes.rb", "get \"up\" => \"rails/health#show\"\n"),
            ],
        ));
        assert_eq!(
            m.web.command,
            "bundle exec rails server --binding 127.0.0.1 --port $PORT"
        );
        assert_eq!(m.build.unwrap().command, "bundle install");
        assert_eq!(m.env["BUNDLE_PATH"], "vendor/bundle");
        assert_eq!(m.health.path, "/up");
        let (_, m) = parsed(&folder(
            "rack",
            &[("Gemfile", ""), ("config.ru", "run App")],
        ));
        assert!(m.web.command.starts_with("bundle exec rackup"));
        // A plain script (Sinatra's classic style, or the standard library).
        let (text, m) = parsed(&folder(
            "hook",
            &[
                ("Gemfile", "source \"https://rubygems.org\"\n"),
                ("server.rb", "TCPServer.new(\"127.0.0.1\", ENV[\"PORT\"])"),
            ],
        ));
        assert_eq!(m.web.command, "bundle exec ruby server.rb");
        assert_eq!(m.build.unwrap().command, "bundle install");
        assert!(
            text.contains("# server.rb looks like the app's main file"),
            "{text}"
        );
        assert!(!text.contains("TODO: no Rails"), "{text}");
        let (text, m) = parsed(&folder(
            "hook",
            &[("Gemfile", ""), ("app.rb", "set :port, 4567")],
        ));
        assert_eq!(m.web.command, "bundle exec ruby app.rb");
        assert!(
            text.contains("TODO: app.rb does not mention PORT"),
            "{text}"
        );
        let (text, m) = parsed(&folder("hook", &[("Gemfile", "")]));
        assert_eq!(m.web.command, "bundle exec ruby app.rb");
        assert!(text.contains("TODO: no Rails"), "{text}");
    }

    #[test]
    fn go_and_rust_apps_compile_one_program_into_bin() {
        let (_, m) = parsed(&folder(
            "svc",
            &[
                ("go.mod", "module github.com/acme/Orders\n\ngo 1.22\n"),
                (
                    "main.go",
                    "http.ListenAndServe(\":\"+os.Getenv(\"PORT\"), nil)",
                ),
            ],
        ));
        assert_eq!(m.build.unwrap().command, "go build -o bin/orders .");
        assert_eq!(m.web.command, "./bin/orders");
        let (text, m) = parsed(&folder(
            "svc",
            &[
                ("Cargo.toml", "[package]\nname = \"api_server\"\n"),
                ("Cargo.lock", ""),
                (
                    "src/main.rs",
                    "fn main() { let port = std::env::var(\"PORT\"); }",
                ),
            ],
        ));
        assert_eq!(
            m.build.unwrap().command,
            "cargo build --release --locked && mkdir -p bin && mv target/release/api_server bin/ && rm -rf target"
        );
        assert_eq!(m.web.command, "./bin/api_server");
        assert!(!text.contains("TODO"), "{text}");
    }

    #[test]
    fn a_dockerfile_wins_and_gives_its_port() {
        let (text, m) = parsed(&folder(
            "images",
            &[
                (
                    "Dockerfile",
                    "FROM scratch\nCOPY hello /hello\nexpose 9000/tcp\n",
                ),
                ("package.json", "{}"),
            ],
        ));
        assert_eq!(m.runtime, RuntimeKind::Docker);
        assert_eq!(m.docker().port, 9000);
        assert!(
            m.build.is_none(),
            "a Docker app builds through its Dockerfile"
        );
        assert_eq!(m.health.path, "/");
        assert!(text.contains("Also found: package.json"), "{text}");
        let (_, m) = parsed(&folder("images", &[("Dockerfile", "FROM scratch\n")]));
        assert_eq!(m.docker().port, 8080);
    }

    #[test]
    fn a_procfile_names_the_web_command_and_an_unknown_folder_still_parses() {
        let (_, m) = parsed(&folder(
            "heroku",
            &[
                ("requirements.txt", "gunicorn\n"),
                (
                    "Procfile",
                    "release: ./migrate\nweb: gunicorn shop.wsgi --bind 0.0.0.0:$PORT\n",
                ),
            ],
        ));
        assert_eq!(m.web.command, "gunicorn shop.wsgi --bind 0.0.0.0:$PORT");
        let (text, m) = parsed(&folder("42 things!", &[("README", "")]));
        assert_eq!(m.name, "app-42-things");
        assert!(m.build.is_none());
        assert!(text.contains("TODO"), "{text}");
    }

    #[test]
    fn names_are_made_valid_from_any_folder_name() {
        assert_eq!(app_name("Shop_API"), "shop-api");
        assert_eq!(app_name("--x--"), "x");
        assert_eq!(app_name("日本"), "app");
        assert_eq!(app_name(&"a".repeat(100)).len(), 63);
        assert_eq!(app_name(""), "app");
    }
}
