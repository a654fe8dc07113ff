//! Who may do what: accounts with a role, API tokens, dashboard sessions in
//! signed cookies, CSRF tokens, and the slowing down of repeated wrong
//! passwords.
//!
//! This crate owns turning a credential into a [`Principal`] and judging
//! what a principal may do. It never serves HTTP: the API and the
//! dashboard read the credential from the request, ask [`Auth`], and check
//! the principal's role before acting.
//!
//! - Passwords are stored as Argon2id hashes; tokens and session ids as
//!   SHA-256 hashes. A secret is shown once, when made.
//! - A session cookie is `<id>.<HMAC-SHA256(id)>` under a key kept in the
//!   data folder: a forged or altered cookie is refused before any lookup.
//! - Tokens and sessions are looked up on every request: revoking one takes
//!   effect with the next request.
//! - A wrong user name and a wrong password get the same answer after the
//!   same work (an unknown user is checked against a dummy hash).
//! - After [`FREE_FAILURES`] failed logins for one user name or from one
//!   address within [`FAILURE_WINDOW`], each further attempt waits, doubling
//!   from 100 ms up to 6.4 s, before it is answered.
//! - Nobody is trusted by address. The quick start needs no set-up because
//!   the server keeps an administrator token in `admin.token` in its data
//!   folder (mode 0600, in a folder of mode 0700): whoever can read that
//!   file can already read the store and the session key, so the file's
//!   permissions are the boundary, as a Unix socket's are for Docker. The
//!   CLI on the server's host uses it when it can read it.
//! - Password hashing (Argon2, 19 MiB a hash) runs at most
//!   [`HASHING_AT_ONCE`] at a time; a login beyond that is told to retry
//!   ([`AuthError::Busy`]) rather than queued, so a flood of logins cannot
//!   exhaust memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use baton_store::{Store, StoreError, TokenRecord, UserRecord};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Failed logins allowed before answers slow down.
pub const FREE_FAILURES: u32 = 5;
/// How long failures are remembered.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// How long a dashboard session lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// The session cookie's name.
pub const COOKIE: &str = "baton_session";
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// The file in the data folder holding the administrator token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The name the audit log gives whoever uses the administrator token; no
/// account may take it.
pub const ADMIN_TOKEN_USER: &str = "local-admin";
/// Password hashes computed at once (each takes 19 MiB and a core).
pub const HASHING_AT_ONCE: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees everything, changes nothing.
    Viewer,
    /// Deploys, promotes, rolls back and flips flags in granted environments.
    Deployer,
    /// Everything, including users, tokens and settings.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "viewer" => Some(Role::Viewer),
            "deployer" => Some(Role::Deployer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Via {
    Session {
        #[serde(skip)]
        csrf: String,
    },
    Token {
        id: i64,
        name: String,
    },
    /// The administrator token of the data folder (`admin.token`).
    AdminToken,
}

/// Someone (or something) making a request, and what they may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    /// For deployers: the environments they may change; `None` is all.
    pub environments: Option<Vec<String>>,
    /// For deployers: the apps they may change; `None` is all.
    pub apps: Option<Vec<String>>,
    pub via: Via,
}

impl Principal {
    pub fn has(&self, role: Role) -> bool {
        self.role >= role
    }

    /// Whether this principal may upload releases of `app`, deploy,
    /// promote, roll back or flip flags in `environment`: the one rule for
    /// every change to an app.
    pub fn may_change(&self, app: &str, environment: &str) -> bool {
        let granted = |list: &Option<Vec<String>>, x: &str| {
            list.as_ref().is_none_or(|l| l.iter().any(|e| e == x))
        };
        match self.role {
            Role::Admin => true,
            Role::Deployer => granted(&self.environments, environment) && granted(&self.apps, app),
            Role::Viewer => false,
        }
    }

    /// Whether this principal may read the secrets of `environment` (its
    /// variables in the manifest): admins only, since a viewer or a
    /// deployer limited to staging must not learn production's.
    pub fn may_read_secrets(&self) -> bool {
        self.role == Role::Admin
    }

    /// The CSRF token a form or a cookie-authenticated request must carry.
    pub fn csrf(&self) -> Option<&str> {
        match &self.via {
            Via::Session { csrf } => Some(csrf),
            Via::Token { .. } | Via::AdminToken => None,
        }
    }

    /// Who the audit log names: the user, and the token if one was used.
    pub fn actor(&self) -> String {
        match &self.via {
            Via::Token { name, .. } => format!("{} (token {name})", self.name),
            Via::AdminToken => format!("{} ({ADMIN_TOKEN_FILE})", self.name),
            Via::Session { .. } => self.name.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("wrong user name or password")]
    WrongCredentials,
    #[error("{0}")]
    Invalid(String),
    #[error("too many logins at once; try again in a second")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot read or write {path}: {source}")]
    Key {
        path: String,
        source: std::io::Error,
    },
}

/// The keeper of accounts, sessions and tokens.
pub struct Auth {
    store: Store,
    key: [u8; 32],
    /// SHA-256 of the administrator token.
    admin_token: [u8; 32],
    failures: Mutex<HashMap<String, (u32, Instant)>>,
    dummy_hash: String,
    hashing: tokio::sync::Semaphore,
}

impl Auth {
    /// Loads the session key (`data/session.key`) and the administrator
    /// token (`data/admin.token`), creating each (readable by its owner
    /// only) on first start.
    pub fn open(store: Store, data: &Path) -> Result<Auth, AuthError> {
        let key_path = data.join("session.key");
        let key = match std::fs::read(&key_path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0; 32];
                key.copy_from_slice(&bytes);
                key
            }
            Ok(_) | Err(_) => {
                let mut key = [0; 32];
                getrandom::fill(&mut key)
                    .map_err(|e| key_error(&key_path)(std::io::Error::other(e.to_string())))?;
                write_private(&key_path, &key).map_err(key_error(&key_path))?;
                key
            }
        };
        let token_path = data.join(ADMIN_TOKEN_FILE);
        let token = match std::fs::read_to_string(&token_path) {
            Ok(text) if text.trim().starts_with("baton_") => text.trim().to_string(),
            Ok(_) | Err(_) => {
                let token = format!("baton_{}", random_hex(32));
                write_private(&token_path, format!("{token}\n").as_bytes())
                    .map_err(key_error(&token_path))?;
                token
            }
        };
        Ok(Auth {
            store,
            key,
            admin_token: Sha256::digest(token.as_bytes()).into(),
            failures: Mutex::new(HashMap::new()),
            dummy_hash: hash_password("not a password of anyone's")?,
            hashing: tokio::sync::Semaphore::new(HASHING_AT_ONCE),
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// True until the first account exists.
    pub async fn no_account_yet(&self) -> Result<bool, AuthError> {
        Ok(self.store.count_users().await? == 0)
    }

    pub async fn add_user(
        &self,
        name: &str,
        password: &str,
        role: Role,
        environments: Option<Vec<String>>,
        apps: Option<Vec<String>>,
    ) -> Result<(), AuthError> {
        check_user_name(name)?;
        check_password(password)?;
        let password_hash = {
            let _permit = self.hashing.acquire().await.map_err(|_| AuthError::Busy)?;
            let password = password.to_string();
            tokio::task::spawn_blocking(move || hash_password(&password))
                .await
                .map_err(|e| AuthError::Invalid(format!("cannot hash the password: {e}")))??
        };
        self.store
            .create_user(&UserRecord {
                name: name.to_string(),
                password_hash,
                role: role.as_str().to_string(),
                environments,
                apps,
                created_at: baton_store::now_ms(),
            })
            .await?;
        Ok(())
    }

    /// Checks a password; on success starts a session and returns the cookie
    /// value. Slows down after repeated failures, for the user name and for
    /// the address alike.
    pub async fn login(
        &self,
        name: &str,
        password: &str,
        from: IpAddr,
    ) -> Result<(String, Principal), AuthError> {
        let keys = [format!("user:{name}"), format!("ip:{from}")];
        let delay = self.penalty(&keys);
        if !delay.is_zero() {
            tracing::warn!(user = name, from = %from, delay_ms = delay.as_millis() as u64, "repeated failed logins; slowing down");
            tokio::time::sleep(delay).await;
        }
        // Refused, not queued: a queue of hashes is what exhausts memory.
        let _permit = self.hashing.try_acquire().map_err(|_| AuthError::Busy)?;
        let user = self.store.user(name).await?;
        let hash = user
            .as_ref()
            .map(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let password = password.to_string();
        let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        drop(_permit);
        let (Some(user), true) = (user, matches) else {
            self.fail(&keys);
            tracing::warn!(user = name, from = %from, "failed login");
            return Err(AuthError::WrongCredentials);
        };
        self.forget(&keys[..1]);
        let id = random_hex(32);
        let csrf = random_hex(32);
        let expires = baton_store::now_ms() + SESSION_LIFETIME.as_millis() as i64;
        self.store
            .create_session(
                &sha256_hex(&id),
                &user.name,
                &csrf,
                expires,
                Some(&from.to_string()),
            )
            .await?;
        let cookie = format!("{id}.{}", self.sign(&id));
        Ok((cookie, principal_of(&user, Via::Session { csrf })))
    }

    /// The principal of a session cookie's value, if it is genuine and live.
    pub async fn session(&self, cookie: &str) -> Result<Option<Principal>, AuthError> {
        let Some(id) = self.verify_cookie(cookie) else {
            return Ok(None);
        };
        let Some(session) = self.store.session(&sha256_hex(id)).await? else {
            return Ok(None);
        };
        let Some(user) = self.store.user(&session.user).await? else {
            return Ok(None);
        };
        Ok(Some(principal_of(
            &user,
            Via::Session { csrf: session.csrf },
        )))
    }

    pub async fn logout(&self, cookie: &str) -> Result<(), AuthError> {
        if let Some(id) = self.verify_cookie(cookie) {
            self.store.end_session(&sha256_hex(id)).await?;
        }
        Ok(())
    }

    /// The principal of a bearer token, if it exists and is not revoked.
    /// A token acts with its own role, never above its user's.
    pub async fn token(&self, secret: &str) -> Result<Option<Principal>, AuthError> {
        let Some(token) = self.store.use_token(&sha256_hex(secret)).await? else {
            return Ok(None);
        };
        let Some(user) = self.store.user(&token.user).await? else {
            return Ok(None);
        };
        let mut principal = principal_of(
            &user,
            Via::Token {
                id: token.id,
                name: token.name.clone(),
            },
        );
        if let Some(role) = Role::parse(&token.role) {
            principal.role = principal.role.min(role);
        }
        Ok(Some(principal))
    }

    /// Makes a token for `user` with at most their role; returns the secret
    /// (shown once) and its record.
    pub async fn create_token(
        &self,
        user: &str,
        name: &str,
        role: Role,
    ) -> Result<(String, TokenRecord), AuthError> {
        if name.trim().is_empty() || name.len() > 100 {
            return Err(AuthError::Invalid(
                "a token needs a name of 1 to 100 characters, saying what uses it".into(),
            ));
        }
        let owner = self
            .store
            .user(user)
            .await?
            .ok_or_else(|| AuthError::Invalid(format!("no user {user}")))?;
        let owner_role = Role::parse(&owner.role).unwrap_or(Role::Viewer);
        if role > owner_role {
            return Err(AuthError::Invalid(format!(
                "{user} is a {owner_role}: a token cannot be given the {role} role"
            )));
        }
        let secret = format!("baton_{}", random_hex(32));
        let record = self
            .store
            .create_token(
                name,
                user,
                role.as_str(),
                &sha256_hex(&secret),
                &secret[..14],
            )
            .await?;
        Ok((secret, record))
    }

    /// Who a request is: a bearer token (`Authorization: Bearer …`: an API
    /// token or the administrator token), else a session cookie. Where the
    /// request comes from never matters.
    pub async fn authenticate(
        &self,
        authorization: Option<&str>,
        cookies: Option<&str>,
    ) -> Result<Option<Principal>, AuthError> {
        if let Some(value) = authorization {
            let Some(secret) = value.strip_prefix("Bearer ").map(str::trim) else {
                return Ok(None);
            };
            if self.is_admin_token(secret) {
                return Ok(Some(Principal {
                    name: ADMIN_TOKEN_USER.into(),
                    role: Role::Admin,
                    environments: None,
                    apps: None,
                    via: Via::AdminToken,
                }));
            }
            return self.token(secret).await;
        }
        if let Some(cookie) = cookies.and_then(|c| cookie_value(c, COOKIE)) {
            return self.session(cookie).await;
        }
        Ok(None)
    }

    fn is_admin_token(&self, secret: &str) -> bool {
        // Comparing digests through an HMAC keeps it constant-time.
        let digest = Sha256::digest(secret.as_bytes());
        let mut mac = self.mac();
        mac.update(&self.admin_token);
        let expected = mac.finalize().into_bytes();
        let mut mac = self.mac();
        mac.update(&digest);
        mac.verify_slice(&expected).is_ok()
    }

    /// A fresh random token for the login form's double-submitted cookie.
    pub fn login_token(&self) -> String {
        random_hex(16)
    }

    /// Compares a submitted CSRF token with the session's, in constant time.
    pub fn csrf_matches(&self, principal: &Principal, submitted: &str) -> bool {
        let Some(expected) = principal.csrf() else {
            return false;
        };
        // Comparing two MACs with `verify_slice` keeps the comparison constant-time.
        let mut mac = self.mac();
        mac.update(expected.as_bytes());
        let expected = mac.finalize().into_bytes();
        let mut mac = self.mac();
        mac.update(submitted.as_bytes());
        mac.verify_slice(&expected).is_ok()
    }

    fn mac(&self) -> Hmac<Sha256> {
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    fn sign(&self, id: &str) -> String {
        let mut mac = self.mac();
        mac.update(id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    fn verify_cookie<'a>(&self, cookie: &'a str) -> Option<&'a str> {
        let (id, signature) = cookie.split_once('.')?;
        let signature = hex::decode(signature).ok()?;
        let mut mac = self.mac();
        mac.update(id.as_bytes());
        mac.verify_slice(&signature).ok().map(|_| id)
    }

    fn penalty(&self, keys: &[String]) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|_, (_, at)| at.elapsed() < FAILURE_WINDOW);
        let worst = keys
            .iter()
            .filter_map(|k| failures.get(k).map(|(n, _)| *n))
            .max()
            .unwrap_or(0);
        if worst < FREE_FAILURES {
            return Duration::ZERO;
        }
        let doublings = (worst - FREE_FAILURES).min(6);
        Duration::from_millis(100 << doublings)
    }

    fn fail(&self, keys: &[String]) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            let entry = failures.entry(key.clone()).or_insert((0, Instant::now()));
            entry.0 += 1;
            entry.1 = Instant::now();
        }
    }

    fn forget(&self, keys: &[String]) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        for key in keys {
            failures.remove(key);
        }
    }
}

/// The value of one cookie in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

/// Compares two strings in constant time (for CSRF double-submit checks).
pub fn same_secret(a: &str, b: &str) -> bool {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"baton").expect("any key length");
    mac.update(a.as_bytes());
    let a = mac.finalize().into_bytes();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"baton").expect("any key length");
    mac.update(b.as_bytes());
    mac.verify_slice(&a).is_ok()
}

fn principal_of(user: &UserRecord, via: Via) -> Principal {
    Principal {
        name: user.name.clone(),
        role: Role::parse(&user.role).unwrap_or(Role::Viewer),
        environments: user.environments.clone(),
        apps: user.apps.clone(),
        via,
    }
}

/// An Argon2id hash in PHC format, with a random salt.
pub fn hash_password(password: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Invalid(format!("cannot hash the password: {e}")))
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

pub fn check_user_name(name: &str) -> Result<(), AuthError> {
    if name == ADMIN_TOKEN_USER {
        return Err(AuthError::Invalid(format!(
            "{name:?} names the holder of {ADMIN_TOKEN_FILE} in the audit log; choose another name"
        )));
    }
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "{name:?} is not a valid user name: use 1 to 64 letters, digits and . _ - @"
        )))
    }
}

pub fn check_password(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(AuthError::Invalid(format!(
            "the password is too short: use at least {MIN_PASSWORD} characters"
        )));
    }
    Ok(())
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Random bytes as hex, from the operating system (the one source of
/// randomness in Baton's own code; Argon2 draws its salts itself).
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    // The kernel's generator does not fail once the system has booted; a
    // failure here means a broken system, not bad input.
    getrandom::fill(&mut buf).expect("the operating system's random generator failed");
    hex::encode(buf)
}

fn key_error(path: &Path) -> impl FnOnce(std::io::Error) -> AuthError + '_ {
    move |source| AuthError::Key {
        path: path.display().to_string(),
        source,
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn auth() -> (tempfile::TempDir, Auth) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("baton.db")).await.unwrap();
        let auth = Auth::open(store, dir.path()).unwrap();
        (dir, auth)
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[tokio::test]
    async fn a_session_cookie_works_until_logout_and_a_forged_one_never() {
        let (_dir, auth) = auth().await;
        assert!(auth.no_account_yet().await.unwrap());
        auth.add_user(
            "ada",
            "correct horse battery",
            Role::Deployer,
            Some(vec!["staging".into()]),
            Some(vec!["shop".into()]),
        )
        .await
        .unwrap();
        assert!(!auth.no_account_yet().await.unwrap());
        let (cookie, principal) = auth
            .login("ada", "correct horse battery", HOME)
            .await
            .unwrap();
        assert!(principal.may_change("shop", "staging"));
        assert!(!principal.may_change("shop", "production"));
        assert!(!principal.may_change("blog", "staging"));
        let again = auth.session(&cookie).await.unwrap().expect("live session");
        assert_eq!(again.name, "ada");
        assert!(auth.csrf_matches(&again, again.csrf().unwrap()));
        assert!(!auth.csrf_matches(&again, "0000"));

        let (id, _) = cookie.split_once('.').unwrap();
        let forged = format!("{id}.{}", "00".repeat(32));
        assert!(auth.session(&forged).await.unwrap().is_none());
        assert!(auth.session(id).await.unwrap().is_none());

        auth.logout(&cookie).await.unwrap();
        assert!(auth.session(&cookie).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn wrong_user_and_wrong_password_look_the_same_and_repeats_slow_down() {
        let (_dir, auth) = auth().await;
        auth.add_user("ada", "correct horse battery", Role::Admin, None, None)
            .await
            .unwrap();
        let unknown = auth.login("bob", "whatever12345", HOME).await.unwrap_err();
        let wrong = auth.login("ada", "whatever12345", HOME).await.unwrap_err();
        assert_eq!(unknown.to_string(), wrong.to_string());
        for _ in 0..7 {
            let _ = auth.login("ada", "still wrong!!", HOME).await;
        }
        // Nine failures so far: the tenth waits 100 ms × 2⁴.
        let started = Instant::now();
        assert!(auth.login("ada", "still wrong!!", HOME).await.is_err());
        assert!(started.elapsed() >= Duration::from_millis(1600));
    }

    #[tokio::test]
    async fn tokens_act_with_their_role_and_stop_when_revoked() {
        let (_dir, auth) = auth().await;
        auth.add_user("ci", "a long enough password", Role::Deployer, None, None)
            .await
            .unwrap();
        let err = auth
            .create_token("ci", "deploys", Role::Admin)
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("cannot be given the admin role"),
            "{err}"
        );
        let (secret, record) = auth
            .create_token("ci", "reads", Role::Viewer)
            .await
            .unwrap();
        let principal = auth.token(&secret).await.unwrap().unwrap();
        assert_eq!(principal.role, Role::Viewer);
        assert_eq!(principal.actor(), "ci (token reads)");
        auth.store().revoke_token(record.id).await.unwrap();
        assert!(auth.token(&secret).await.unwrap().is_none());
        assert!(auth.token("baton_nonsense").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn the_admin_token_file_is_private_and_the_only_way_in_without_an_account() {
        use std::os::unix::fs::PermissionsExt;
        let (dir, auth) = auth().await;
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let secret = std::fs::read_to_string(&path).unwrap();
        let bearer = format!("Bearer {}", secret.trim());
        let admin = auth
            .authenticate(Some(&bearer), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(admin.role, Role::Admin);
        assert_eq!(admin.actor(), "local-admin (admin.token)");
        // Nothing else gets in: no credential, a wrong one, a prefix.
        assert!(auth.authenticate(None, None).await.unwrap().is_none());
        let wrong = format!("Bearer {}", &secret.trim()[..20]);
        assert!(auth
            .authenticate(Some(&wrong), None)
            .await
            .unwrap()
            .is_none());
        // The same file is read again after a restart.
        let again = Auth::open(auth.store().clone(), dir.path()).unwrap();
        assert!(again
            .authenticate(Some(&bearer), None)
            .await
            .unwrap()
            .is_some());
        assert!(check_user_name(ADMIN_TOKEN_USER).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logins_beyond_the_hashing_limit_are_told_to_retry() {
        let (_dir, auth) = auth().await;
        let auth = std::sync::Arc::new(auth);
        let mut tasks = Vec::new();
        for i in 0..16 {
            let auth = std::sync::Arc::clone(&auth);
            // Distinct addresses and names: no slowing down, only the limit.
            let from = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, i));
            tasks.push(tokio::spawn(async move {
                auth.login(&format!("u{i}"), "wrong password!", from).await
            }));
        }
        let mut busy = 0;
        for task in tasks {
            match task.await.unwrap() {
                Err(AuthError::Busy) => busy += 1,
                Err(AuthError::WrongCredentials) => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(busy > 0, "16 logins at once all hashed");
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, "correct horse battery"));
        assert!(!verify_password(&hash, "correct horse batterY"));
        assert!(check_password("short").is_err());
        assert!(check_user_name("ada lovelace").is_err());
    }
}
