//! Private `redis-server` processes for tests: on free ports, nothing saved to
//! disk, killed on drop. Never the machine's shared 6379.

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

pub fn redis_cli(port: u16, args: &[&str]) -> Option<String> {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every member of every shard's due-queue (`po:{<shard>}:due`) of a
/// single server.
pub fn due_members(port: u16) -> Vec<String> {
    let keys = redis_cli(port, &["--scan", "--pattern", "po:*:due"]).unwrap_or_default();
    keys.lines()
        .flat_map(|key| {
            redis_cli(port, &["ZRANGE", key, "0", "-1"])
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// One redis-server.
pub struct RedisServer {
    pub port: u16,
    process: Option<Child>,
    dir: PathBuf,
    cluster: bool,
    /// Append-only file with fsync on every write: data survives a restart.
    persistent: bool,
    /// The master it replicates, if it is a replica.
    master: Option<u16>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_on(free_port(), false, false)
    }

    /// A server whose data survives `restart` (AOF, fsync always).
    pub fn start_persistent() -> RedisServer {
        RedisServer::start_on(free_port(), false, true)
    }

    fn start_on(port: u16, cluster: bool, persistent: bool) -> RedisServer {
        RedisServer::launched(port, cluster, persistent, None)
    }

    fn launched(port: u16, cluster: bool, persistent: bool, master: Option<u16>) -> RedisServer {
        let dir = std::env::temp_dir().join(format!("po-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = RedisServer {
            port,
            process: None,
            dir,
            cluster,
            persistent,
            master,
        };
        server.launch();
        server
    }

    /// A replica of `master` (`REPLICAOF`), in sync when this returns.
    pub fn replica_of(master: &RedisServer) -> RedisServer {
        let server = RedisServer::launched(free_port(), false, false, Some(master.port));
        server.wait_for_link();
        server
    }

    /// Waits until a replica's link to its master is up.
    pub fn wait_for_link(&self) {
        wait_until("the replica's link", || {
            redis_cli(self.port, &["INFO", "replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
        });
    }

    /// Stops the process (SIGSTOP): it neither answers nor acknowledges.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Continues a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.process.as_ref().expect("running").id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Makes a replica a master (`REPLICAOF NO ONE`): a failover.
    pub fn promote(&self) {
        redis_cli(self.port, &["REPLICAOF", "NO", "ONE"]).expect("promoted");
    }

    fn launch(&mut self) {
        let port = self.port.to_string();
        let appendonly = if self.persistent { "yes" } else { "no" };
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", appendonly, "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(master) = self.master {
            command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        if self.cluster {
            command.args([
                // Tests hold a node up with DEBUG SLEEP (from this machine).
                "--enable-debug-command",
                "local",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
            ]);
        }
        self.process = Some(command.spawn().expect("redis-server is installed"));
        wait_until("redis-server", || {
            redis_cli(self.port, &["PING"]).is_some_and(|answer| answer.trim() == "PONG")
        });
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (without persistence its data is gone).
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A local Redis Cluster of three masters, created with `redis-cli --cluster`.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| RedisServer::start_on(free_port(), true, false))
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("redis-cli is installed");
        assert!(status.success(), "redis-cli --cluster create failed");
        for node in &nodes {
            wait_until("cluster_state:ok", || {
                redis_cli(node.port, &["CLUSTER", "INFO"])
                    .is_some_and(|info| info.contains("cluster_state:ok"))
            });
        }
        RedisCluster { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }
}
