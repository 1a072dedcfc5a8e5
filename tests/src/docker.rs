//! The Docker Engine for the container deploy tests: whether it is there, test images built
//! locally (never pulled), and the cleanup of what a test created.
//!
//! The images are a root holding Debian's static busybox (`busybox-static`) imported with
//! `docker import`: `NAME:vN` runs `busybox httpd` serving `vN\n` on port 8080; a broken one
//! runs `sleep` and never listens.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::agent::test_tempdir;

/// The static busybox the images are made of.
pub const BUSYBOX: &str = "/bin/busybox";

/// Why the Docker tests cannot run here, or `None` when they can.
pub fn docker_missing() -> Option<String> {
    if !Path::new(BUSYBOX).exists() {
        return Some(format!(
            "{BUSYBOX} is missing (Debian package busybox-static)"
        ));
    }
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => None,
        Ok(_) => Some("the Docker Engine does not answer (docker info failed)".into()),
        Err(e) => Some(format!("the docker command is missing: {e}")),
    }
}

/// Runs `docker ARGS`; its stdout, or panics with its stderr.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"));
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a test image does.
pub enum Behaviour {
    /// Serves `GET /` on port 8080, answering this text and a newline.
    Serve(&'static str),
    /// Runs but never listens: never ready.
    Hang,
}

/// Images built for one test, removed (with every container of the test's nodes) on drop.
/// Declare it before the agents, so the agents are stopped first and cannot restart what
/// the cleanup removes.
pub struct TestImages {
    pub repository: String,
    tags: Vec<String>,
    nodes: Vec<String>,
}

impl TestImages {
    /// Builds `REPOSITORY:TAG` for each `(TAG, behaviour)`; REPOSITORY is `rumor-demo-PID-NAME`.
    pub fn build(name: &str, images: &[(&str, Behaviour)], nodes: &[&str]) -> TestImages {
        let repository = format!("rumor-demo-{}-{name}", std::process::id());
        let built = TestImages {
            repository: repository.clone(),
            tags: images.iter().map(|(t, _)| t.to_string()).collect(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
        };
        for (tag, behaviour) in images {
            let dir = test_tempdir();
            let root = dir.path();
            std::fs::create_dir_all(root.join("bin")).unwrap();
            std::fs::create_dir_all(root.join("www")).unwrap();
            std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
            let cmd = match behaviour {
                Behaviour::Serve(text) => {
                    std::fs::write(root.join("www/index.html"), format!("{text}\n")).unwrap();
                    r#"CMD ["/bin/busybox","httpd","-f","-p","8080","-h","/www"]"#
                }
                Behaviour::Hang => r#"CMD ["/bin/busybox","sleep","3600"]"#,
            };
            let image = format!("{repository}:{tag}");
            let status = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "tar -C {} -c . | docker import -c '{cmd}' -c 'EXPOSE 8080' - {image} >/dev/null",
                    root.display()
                ))
                .status()
                .expect("sh runs");
            assert!(status.success(), "docker import of {image} failed");
        }
        built
    }

    pub fn image(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repository)
    }
}

/// The ids of the containers labelled with `node` (running or not), optionally of one version.
pub fn containers_of(node: &str, version: Option<&str>) -> Vec<String> {
    let mut args = vec![
        "ps".to_string(),
        "-aq".into(),
        "--no-trunc".into(),
        "--filter".into(),
        format!("label=rumor.node={node}"),
    ];
    if let Some(v) = version {
        args.extend(["--filter".into(), format!("label=rumor.version={v}")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&args).lines().map(str::to_string).collect()
}

impl Drop for TestImages {
    fn drop(&mut self) {
        for node in &self.nodes {
            // Not containers_of: a drop during a failing test must not panic again.
            let label = format!("label=rumor.node={node}");
            let ids: Vec<String> = Command::new("docker")
                .args(["ps", "-aq", "--filter", &label])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = Command::new("docker").args(&args).output();
            }
        }
        for tag in &self.tags {
            let _ = Command::new("docker")
                .args(["rmi", "-f", &self.image(tag)])
                .output();
        }
    }
}
