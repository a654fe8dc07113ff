//! The Docker runtime: a target is a container of the release's image,
//! started through the Docker Engine API (bollard, over the Unix socket),
//! its port published on loopback for the proxy, run as the image's own
//! user, never privileged and with `no-new-privileges`, labelled so that a
//! restarted Baton finds it again, on Baton's own network. Its output is
//! copied into the target's log file, each line stamped as the process
//! runtime's are, so that readers need not know the runtime. Images are built here from a release's packed folder, once per
//! release; this module never decides when to build, start or prune.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, HostConfig, NetworkCreateRequest, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, ListImagesOptions, ListNetworksOptions, LogsOptions,
    RemoveContainerOptions, RemoveImageOptions, StopContainerOptions,
};
use bollard::Docker;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::OnceCell;

use crate::{ContainerSpec, Exit, LogFiles, Runtime, RuntimeError, TargetHandle, TargetSpec};

/// The Docker network Baton's containers join.
pub const NETWORK: &str = "baton";
/// Labels that mark what Baton made.
pub const LABEL_APP: &str = "baton.app";
pub const LABEL_ENVIRONMENT: &str = "baton.environment";
pub const LABEL_RELEASE: &str = "baton.release";
pub const LABEL_TARGET: &str = "baton.target";

pub struct DockerRuntime {
    docker: OnceCell<Docker>,
    logs: LogFiles,
    /// The id of Baton's network, found or created on first use.
    network: OnceCell<String>,
}

fn explain(e: DockerError) -> RuntimeError {
    RuntimeError::Docker(match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => {
            format!("the Docker Engine refused ({status_code}): {message}")
        }
        DockerError::SocketNotFoundError(path) => {
            format!("cannot reach the Docker Engine: no socket at {path}; is dockerd running? (or set DOCKER_HOST)")
        }
        other => format!("cannot talk to the Docker Engine: {other}"),
    })
}

/// The networks named exactly [`NETWORK`], oldest first (by creation time,
/// then id).
async fn networks(docker: &Docker) -> Result<Vec<String>, RuntimeError> {
    let options = ListNetworksOptions {
        filters: Some(HashMap::from([(
            "name".to_string(),
            vec![NETWORK.to_string()],
        )])),
    };
    let mut ours: Vec<_> = docker
        .list_networks(Some(options))
        .await
        .map_err(explain)?
        .into_iter()
        // The engine's name filter matches parts of names too.
        .filter(|n| n.name.as_deref() == Some(NETWORK))
        .filter_map(|n| Some((n.created.unwrap_or_default(), n.id?)))
        .collect();
    ours.sort();
    Ok(ours.into_iter().map(|(_, id)| id).collect())
}

/// What the engine is asked to create for a target: the image's own user,
/// never privileged, `no-new-privileges`, port published on loopback only.
fn create_body(spec: &TargetSpec, c: &ContainerSpec, network: String) -> ContainerCreateBody {
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if spec.is_web() {
        env.push(format!("PORT={}", c.port));
    }
    env.extend([
        format!("BATON_PROCESS={}", spec.process),
        format!("BATON_APP={}", spec.app),
        format!("BATON_ENVIRONMENT={}", spec.environment),
        format!("BATON_RELEASE={}", spec.release),
        format!("BATON_TARGET={}", spec.target_id),
    ]);
    let port = format!("{}/tcp", c.port);
    let restart = match c.restart.as_str() {
        "always" => RestartPolicyNameEnum::ALWAYS,
        "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
        "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
        _ => RestartPolicyNameEnum::NO,
    };
    // A worker runs its own command in the release's image, in place of
    // the image's entrypoint and command, and listens on nothing.
    let (entrypoint, cmd, exposed_ports, port_bindings) = if spec.is_web() {
        let bindings = HashMap::from([(
            port.clone(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(spec.port.to_string()),
            }]),
        )]);
        (None, None, Some(vec![port]), Some(bindings))
    } else {
        let shell = vec!["sh".to_string(), "-c".to_string()];
        (Some(shell), Some(vec![spec.command.clone()]), None, None)
    };
    ContainerCreateBody {
        image: Some(c.image.clone()),
        entrypoint,
        cmd,
        env: Some(env),
        labels: Some(HashMap::from([
            (LABEL_APP.to_string(), spec.app.clone()),
            (LABEL_ENVIRONMENT.to_string(), spec.environment.clone()),
            (LABEL_RELEASE.to_string(), spec.release.clone()),
            (LABEL_TARGET.to_string(), spec.target_id.to_string()),
        ])),
        exposed_ports,
        host_config: Some(HostConfig {
            port_bindings,
            memory: c.memory_bytes,
            nano_cpus: c.nano_cpus,
            restart_policy: Some(RestartPolicy {
                name: Some(restart),
                maximum_retry_count: None,
            }),
            network_mode: Some(network),
            // A small init as PID 1 passes SIGTERM on and reaps
            // zombies, so apps need no signal handling of their own.
            init: Some(true),
            // The image's own user (no `user` override), and nothing it runs
            // may gain privileges: no privileged mode, and setuid binaries
            // gain nothing.
            privileged: Some(false),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

impl DockerRuntime {
    /// Uses the engine named by DOCKER_HOST, or the local socket. Nothing
    /// is contacted until a Docker app needs it, so a server without an
    /// engine runs process apps as usual.
    pub fn new(logs: LogFiles) -> DockerRuntime {
        DockerRuntime {
            docker: OnceCell::new(),
            logs,
            network: OnceCell::new(),
        }
    }

    /// The client, connected on first use and speaking the engine's API
    /// version (older engines refuse a newer client's requests).
    async fn client(&self) -> Result<&Docker, RuntimeError> {
        self.docker
            .get_or_try_init(|| async {
                let docker = Docker::connect_with_local_defaults().map_err(explain)?;
                docker.negotiate_version().await.map_err(explain)
            })
            .await
    }

    /// The id of Baton's network, created if there is none. Servers that
    /// start their first container at once can each create one (the engine
    /// allows several networks of one name), and the engine then refuses to
    /// start a container on either ("network baton is ambiguous"), even by
    /// id. So all pick the oldest and remove the others; the engine refuses
    /// to remove one a container still uses, which is then left alone.
    async fn ensure_network(&self) -> Result<String, RuntimeError> {
        self.network
            .get_or_try_init(|| async {
                let docker = self.client().await?;
                let found = networks(docker).await?;
                if let Some((oldest, others)) = found.split_first() {
                    for other in others {
                        if let Err(e) = docker.remove_network(other).await {
                            tracing::debug!(network = other, error = %e, "duplicate network kept");
                        }
                    }
                    return Ok(oldest.clone());
                }
                let request = NetworkCreateRequest {
                    name: NETWORK.to_string(),
                    driver: Some("bridge".into()),
                    labels: Some(HashMap::from([("baton".to_string(), "true".to_string())])),
                    ..Default::default()
                };
                match docker.create_network(request).await {
                    // Created meanwhile by another Baton: fine.
                    Ok(_)
                    | Err(DockerError::DockerResponseServerError {
                        status_code: 409, ..
                    }) => {}
                    Err(e) => return Err(explain(e)),
                }
                let found = networks(docker).await?;
                let Some((oldest, others)) = found.split_first() else {
                    return Err(RuntimeError::Docker(format!(
                        "the network {NETWORK} was created but the engine does not list it"
                    )));
                };
                for other in others {
                    if let Err(e) = docker.remove_network(other).await {
                        tracing::debug!(network = other, error = %e, "duplicate network kept");
                    }
                }
                Ok(oldest.clone())
            })
            .await
            .cloned()
    }

    /// Builds the image of a release from its packed folder (the build
    /// context) and returns its id. `dockerfile` is the path inside it.
    /// Builds a release's image; the engine's output is appended to `log`
    /// as it comes (the CLI shows it while it waits, and it is kept with
    /// the release).
    pub async fn build_image(
        &self,
        app: &str,
        release: &str,
        archive: Vec<u8>,
        dockerfile: &str,
        log: &std::path::Path,
    ) -> Result<String, RuntimeError> {
        use std::io::Write;
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|source| RuntimeError::Log {
                path: log.display().to_string(),
                source,
            })?;
        let tag = format!("baton/{app}:{}", short(release));
        let options = BuildImageOptions {
            dockerfile: dockerfile.to_string(),
            t: Some(tag.clone()),
            rm: true,
            forcerm: true,
            labels: Some(HashMap::from([
                (LABEL_APP.to_string(), app.to_string()),
                (LABEL_RELEASE.to_string(), release.to_string()),
            ])),
            ..Default::default()
        };
        let mut output = Vec::new();
        let docker = self.client().await?;
        let mut stream =
            docker.build_image(options, None, Some(bollard::body_full(archive.into())));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(error) = info.error_detail.and_then(|d| d.message) {
                        let _ = writeln!(out, "[baton] the image build failed: {error}");
                        return Err(RuntimeError::Docker(format!(
                            "building the image failed: {error}\nlast build output:\n{}",
                            output[output.len().saturating_sub(10)..].join("")
                        )));
                    }
                    if let Some(line) = info.stream {
                        // Lost output costs a view, never the build.
                        let _ = out.write_all(line.as_bytes());
                        output.push(line);
                    }
                }
                Err(DockerError::DockerStreamError { error }) => {
                    let _ = writeln!(out, "[baton] the image build failed: {error}");
                    return Err(RuntimeError::Docker(format!(
                        "building the image failed: {error}"
                    )));
                }
                Err(e) => return Err(explain(e)),
            }
        }
        self.image_id(&tag).await
    }

    /// The id (`sha256:…`) of an image the engine has.
    pub async fn image_id(&self, reference: &str) -> Result<String, RuntimeError> {
        match self.client().await?.inspect_image(reference).await {
            Ok(image) => image
                .id
                .ok_or_else(|| RuntimeError::Docker(format!("the engine gave no id for image {reference}"))),
            Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => Err(RuntimeError::Docker(format!(
                "image {reference} is not in the Docker Engine (no registry is used: build or load it first)"
            ))),
            Err(e) => Err(explain(e)),
        }
    }

    /// Removes the images Baton built for `app`, except those in `keep`.
    /// Returns the ids removed. An image still used by a container stays.
    pub async fn prune_images(
        &self,
        app: &str,
        keep: &[String],
    ) -> Result<Vec<String>, RuntimeError> {
        let filters = HashMap::from([("label".to_string(), vec![format!("{LABEL_APP}={app}")])]);
        let docker = self.client().await?;
        let images = docker
            .list_images(Some(ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(explain)?;
        let mut removed = Vec::new();
        for image in images {
            if keep.contains(&image.id) {
                continue;
            }
            let options = RemoveImageOptions {
                force: false,
                ..Default::default()
            };
            match docker.remove_image(&image.id, Some(options), None).await {
                Ok(_) => removed.push(image.id),
                Err(e) => tracing::info!(image = image.id, error = %e, "image kept"),
            }
        }
        Ok(removed)
    }

    /// Copies a container's output into its target's log file, from `since`
    /// (Unix seconds; 0 for everything), until the container stops. The
    /// engine stamps each line with the time it read it; the stamps are
    /// rewritten to the process runtime's format.
    async fn copy_output(&self, target_id: i64, container: String, since: i32) {
        let Ok(docker) = self.client().await.cloned() else {
            return;
        };
        let logs = self.logs.clone();
        tokio::spawn(async move {
            let options = LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                since,
                timestamps: true,
                ..Default::default()
            };
            let mut stream = docker.logs(&container, Some(options));
            let Ok(mut file) = logs.append(target_id) else {
                return;
            };
            while let Some(Ok(chunk)) = stream.next().await {
                if file
                    .write_all(&crate::stamp::restamp(chunk.as_ref()))
                    .is_err()
                {
                    return;
                }
            }
        });
    }

    async fn running(&self, container: &str) -> bool {
        let Ok(docker) = self.client().await else {
            return false;
        };
        match docker.inspect_container(container, None).await {
            Ok(info) => info.state.and_then(|s| s.running).unwrap_or(false),
            Err(_) => false,
        }
    }
}

impl Runtime for DockerRuntime {
    fn available<'a>(&'a self) -> BoxFuture<'a, Result<(), RuntimeError>> {
        async move {
            self.client()
                .await?
                .ping()
                .await
                .map(|_| ())
                .map_err(explain)
        }
        .boxed()
    }

    fn start<'a>(
        &'a self,
        spec: &'a TargetSpec,
    ) -> BoxFuture<'a, Result<TargetHandle, RuntimeError>> {
        async move {
            let c = spec.container.as_ref().ok_or_else(|| {
                RuntimeError::Docker(format!("target {} has no image to run", spec.target_id))
            })?;
            let network = self.ensure_network().await?;
            let docker = self.client().await?;
            let name = format!(
                "baton-{}-{}-{}-{}",
                spec.app,
                spec.environment,
                short(&spec.release),
                spec.target_id
            );
            // A container of this name is a leftover of a start cut short.
            let _ = docker
                .remove_container(&name, Some(RemoveContainerOptions { force: true, ..Default::default() }))
                .await;
            let body = create_body(spec, c, network);
            let options = CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            };
            let created = docker.create_container(Some(options), body).await.map_err(|e| match e {
                DockerError::DockerResponseServerError { status_code: 404, .. } => RuntimeError::Docker(format!(
                    "image {} of release {} is not in the Docker Engine (pruned?); deploy the release again from its folder",
                    short(&c.image),
                    short(&spec.release)
                )),
                other => explain(other),
            })?;
            if let Ok(mut log) = self.logs.append(spec.target_id) {
                let _ = writeln!(
                    log,
                    "{}[baton] starting target {} of {} release {} as container {name} ({}), port {} on 127.0.0.1:{}",
                    crate::stamp::stamp(crate::stamp::now_ms()),
                    spec.target_id,
                    spec.app,
                    short(&spec.release),
                    short(&created.id),
                    c.port,
                    spec.port
                );
            }
            if let Err(e) = docker.start_container(&created.id, None).await {
                let _ = docker
                    .remove_container(&created.id, Some(RemoveContainerOptions { force: true, ..Default::default() }))
                    .await;
                return Err(explain(e));
            }
            self.copy_output(spec.target_id, created.id.clone(), 0).await;
            Ok(TargetHandle {
                target_id: spec.target_id,
                reference: created.id,
            })
        }
        .boxed()
    }

    fn alive<'a>(&'a self, handle: &'a TargetHandle) -> BoxFuture<'a, bool> {
        self.running(&handle.reference).boxed()
    }

    fn wait<'a>(&'a self, handle: &'a TargetHandle) -> BoxFuture<'a, Exit> {
        async move {
            let first = match self.client().await {
                Ok(docker) => docker.wait_container(&handle.reference, None).next().await,
                Err(_) => None,
            };
            match first {
                Some(Ok(response)) => Exit::Code(response.status_code as i32),
                // bollard reports a non-zero exit status as an error.
                Some(Err(DockerError::DockerContainerWaitError { code, .. })) => {
                    Exit::Code(code as i32)
                }
                _ => {
                    // The engine went away or the container is gone: poll.
                    while self.running(&handle.reference).await {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Exit::Vanished
                }
            }
        }
        .boxed()
    }

    fn stop<'a>(
        &'a self,
        handle: &'a TargetHandle,
        grace: Duration,
    ) -> BoxFuture<'a, Result<Exit, RuntimeError>> {
        async move {
            let id = &handle.reference;
            let exit = if self.running(id).await {
                // Docker sends SIGTERM, then SIGKILL after `t` seconds.
                let options = StopContainerOptions {
                    t: Some(grace.as_secs().max(1) as i32),
                    signal: None,
                };
                self.client()
                    .await?
                    .stop_container(id, Some(options))
                    .await
                    .map_err(explain)?;
                self.wait(handle).await
            } else {
                Exit::Vanished
            };
            let options = RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            match self
                .client()
                .await?
                .remove_container(id, Some(options))
                .await
            {
                Ok(())
                | Err(DockerError::DockerResponseServerError {
                    status_code: 404, ..
                }) => Ok(exit),
                Err(e) => Err(explain(e)),
            }
        }
        .boxed()
    }

    fn adopt<'a>(&'a self, handle: &'a TargetHandle) -> BoxFuture<'a, ()> {
        async move {
            // Go on copying output from about where the last copy stopped.
            let since = std::fs::metadata(self.logs.path(handle.target_id))
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_secs() as i32 + 1)
                .unwrap_or(0);
            self.copy_output(handle.target_id, handle.reference.clone(), since)
                .await;
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_container_runs_as_the_images_user_never_privileged() {
        let spec = TargetSpec {
            process: crate::WEB.to_string(),
            target_id: 1,
            app: "shop".into(),
            environment: "production".into(),
            release: "0123456789abcdef".into(),
            dir: "/nonexistent".into(),
            command: String::new(),
            env: BTreeMap::new(),
            port: 4321,
            container: None,
        };
        let c = ContainerSpec {
            image: "sha256:0".into(),
            port: 8000,
            memory_bytes: None,
            nano_cpus: None,
            restart: "no".into(),
        };
        let body = create_body(&spec, &c, "net".into());
        assert_eq!(body.user, None, "the image's own user");
        let host = body.host_config.unwrap();
        assert_eq!(host.privileged, Some(false));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges".to_string()])
        );
        assert_eq!(host.userns_mode, None);
        assert_eq!(host.cap_add, None);
    }
}
