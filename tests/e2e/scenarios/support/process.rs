use super::*;

use std::sync::LazyLock;

/// The `dsr` binary under test: `DSR_BIN` when set, else the one cargo
/// built for this profile beside this test (`target/<profile>/dsr`; the
/// test runs from `target/<profile>/deps/`). `cargo test --workspace`
/// builds it before any test runs (the `dsr-cli` package's own tests need
/// it); `cargo test -p dsr-e2e` alone does not, so build it first with
/// `cargo build -p dsr-cli --bin dsr`.
pub(crate) static DSR: LazyLock<PathBuf> = LazyLock::new(|| {
    if let Some(p) = std::env::var_os("DSR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let bin = profile_dir.join(format!("dsr{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is not built: run `cargo test --workspace`, or `cargo build -p dsr-cli --bin dsr` before `cargo test -p dsr-e2e` (or set DSR_BIN)",
        bin.display()
    );
    bin
});

/// A child process whose log (stderr) is kept, for failure messages and the
/// personal-data check; stdout (the banner, with its sample commands) is
/// drained.
pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) name: String,
    pub(crate) log: std::sync::Arc<std::sync::Mutex<String>>,
    /// The thread keeping stderr: it ends when the process (and every
    /// holder of its stderr) is gone, with the last line kept.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    pub(crate) fn spawn(name: &str, cmd: &mut Command) -> Self {
        let mut child = cmd
            .env_remove(POSTGRES_ENV)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
        let stderr = child.stderr.take().unwrap();
        let keep = log.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = keep.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Self {
            child,
            name: name.to_owned(),
            log,
            reader: Some(reader),
        }
    }

    pub(crate) fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} {}", self.name);
    }

    pub(crate) fn kill(mut self) -> String {
        self.signal("-KILL");
        let _ = self.child.wait();
        self.whole_log()
    }

    /// Its log once the reader has taken the last line (after the exit).
    fn whole_log(&mut self) -> String {
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        self.log()
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Stops it as Kubernetes does (SIGTERM), waits for it to exit, and
    /// returns its log.
    pub(crate) async fn terminate(mut self) -> String {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(45);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{} did not stop", self.name);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.whole_log()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) async fn channel(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy()
}

/// Waits until the server on `port` answers its health check as SERVING.
pub(crate) async fn ready(port: u16, p: &Proc) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(ch) = Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            && let Ok(r) = HealthClient::new(ch)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
            && r.into_inner().status == 1
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not become ready:\n{}",
            p.name,
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// Under `dsr up`.

pub(crate) fn dsr_up(data: &Path, base: u16, db_url: Option<&str>) -> Proc {
    dsr_up_with(data, base, db_url, None)
}

/// `dsr up`, with its clock started at `clock` when given (a rehearsal of
/// a later date).
pub(crate) fn dsr_up_with(
    data: &Path,
    base: u16,
    db_url: Option<&str>,
    clock: Option<&str>,
) -> Proc {
    let mut cmd = Command::new(&*DSR);
    cmd.args([
        "up",
        "--data-dir",
        data.to_str().unwrap(),
        "--base-port",
        &base.to_string(),
        "--log-format",
        "json",
    ]);
    if let Some(u) = db_url {
        cmd.env("DSR_DATABASE__URL", u);
    }
    if let Some(c) = clock {
        cmd.env("DSR_CLOCK", c);
    }
    // The systems' background jobs (suppression list, lead scoring) every
    // second rather than every 30.
    cmd.env("DSR_SYSTEM_SQL__JOBS_INTERVAL_SECS", "1");
    Proc::spawn("dsr up", &mut cmd)
}

pub(crate) fn cli(data: &Path, base: u16, args: &[&str]) -> std::process::Output {
    Command::new(&*DSR)
        .args(args)
        .args(["--data-dir", data.to_str().unwrap()])
        .env("DSR_UP__BASE_PORT", base.to_string())
        .env_remove(POSTGRES_ENV)
        .output()
        .unwrap()
}

pub(crate) fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "failed:\n{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The state line of `dsr request show`, polled until it reads `want`.
pub(crate) async fn wait_shown(data: &Path, base: u16, id: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let shown = ok(&cli(data, base, &["request", "show", id]));
        if shown
            .lines()
            .any(|l| l.starts_with("state") && l.split_whitespace().nth(1) == Some(want))
        {
            return shown;
        }
        assert!(Instant::now() < deadline, "never {want}:\n{shown}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Whether a connection to the server on `port` holds bytes its process has
/// not read (Linux, `/proc/net/tcp`): with the process stopped (SIGSTOP),
/// a call made to it since waits there.
pub(crate) fn unread_at(port: u16) -> bool {
    let local = format!(":{port:04X}");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                // local_address, rem_address, st (01: established),
                // tx_queue:rx_queue.
                cols.len() > 4
                    && cols[1].ends_with(&local)
                    && cols[3] == "01"
                    && cols[4]
                        .split_once(':')
                        .is_some_and(|(_, rx)| u64::from_str_radix(rx, 16).unwrap_or(0) > 0)
            })
        })
    })
}
