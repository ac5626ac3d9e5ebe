//! Cluster mode with real OS processes on loopback: a coordinator (`tessera serve`),
//! worker nodes (`tessera worker`) and clients (`tessera submit|status|cancel|report`).
//! Workers are SIGKILLed, stopped, partitioned off in a network namespace, the
//! coordinator is SIGKILLed and restarted; every sweep must end with its budget of
//! trials, each recorded exactly once.

use std::collections::BTreeSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera_orchestrator::store::read_table;

const SECRET: &str = "s3cret-for-tests";

fn tessera() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tessera"));
    c.env("TESSERA_SECRET", SECRET)
        .env_remove("TESSERA_COORDINATOR")
        .env_remove("RUST_LOG");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process whose stderr goes to a file; killed when dropped.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn spawn(mut c: Command, log: PathBuf) -> Proc {
        let f = std::fs::File::create(&log).unwrap();
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::from(f))
            .spawn()
            .unwrap();
        Proc { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit by itself.
    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    serve_args: Vec<String>,
    addr: String,
    listen: String,
    coordinator: Option<Proc>,
    workers: Vec<Proc>,
}

impl Cluster {
    fn new() -> Cluster {
        let port = free_port();
        Cluster::on(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{port}"))
    }

    fn on(listen: &str, addr: &str) -> Cluster {
        Cluster::with(listen, addr, &["-v", "--flush-trials", "5"])
    }

    fn with(listen: &str, addr: &str, serve_args: &[&str]) -> Cluster {
        let mut c = Cluster {
            dir: tempfile::tempdir().unwrap(),
            serve_args: serve_args.iter().map(|a| (*a).to_owned()).collect(),
            addr: addr.to_owned(),
            listen: listen.to_owned(),
            coordinator: None,
            workers: Vec::new(),
        };
        c.start_coordinator();
        c
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn start_coordinator(&mut self) {
        let mut c = tessera();
        c.args([
            "serve",
            "--listen",
            &self.listen,
            "--heartbeat-timeout",
            "2",
        ])
        .arg("--state")
        .arg(self.path("state"))
        .args(&self.serve_args);
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let p = Proc::spawn(c, self.path(&format!("coordinator-{n}.log")));
        let start = Instant::now();
        let tcp: std::net::SocketAddr = self.listen.parse().unwrap();
        while TcpStream::connect_timeout(&tcp, Duration::from_millis(100)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "coordinator did not start: {}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.coordinator = Some(p);
    }

    fn worker_cmd(&self, name: &str, slots: u32) -> Command {
        let mut c = tessera();
        c.args(["-v", "worker", "--join", &self.addr, "--name", name])
            .args(["--slots", &slots.to_string()])
            .args(["--ring-bind", "127.0.0.1:0"])
            .env("TESSERA_CACHE_DIR", self.path(&format!("cache-{name}")));
        c
    }

    fn add_worker(&mut self, name: &str, slots: u32) -> usize {
        let c = self.worker_cmd(name, slots);
        self.workers
            .push(Proc::spawn(c, self.path(&format!("worker-{name}.log"))));
        self.workers.len() - 1
    }

    /// Runs a client command against the coordinator; returns (exit code, stdout, stderr).
    fn client(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let o = tessera()
            .args(args)
            .args(["--coordinator", &self.addr])
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// Submits a sweep; returns its id.
    fn submit(&self, name: &str, yaml: &str) -> String {
        let file = self.path(&format!("{name}.yaml"));
        std::fs::write(&file, yaml).unwrap();
        let (code, out, err) = self.client(&["submit", file.to_str().unwrap()]);
        assert_eq!(code, Some(0), "{out}{err}");
        out.split_whitespace().nth(1).unwrap().to_owned()
    }

    fn status_all(&self) -> serde_json::Value {
        let (code, out, err) = self.client(&["status", "--json"]);
        assert_eq!(code, Some(0), "{out}{err}");
        serde_json::from_str(&out).unwrap()
    }

    fn status(&self, sweep: &str) -> serde_json::Value {
        let (code, out, err) = self.client(&["status", sweep, "--json"]);
        assert_eq!(code, Some(0), "{out}{err}");
        serde_json::from_str(&out).unwrap()
    }

    /// Polls the sweep's status until `pred` holds.
    fn wait_for(
        &self,
        sweep: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let s = self.status(sweep);
            if pred(&s["sweeps"][0]) {
                return s;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out waiting for {what}: {s}\n--- coordinator:\n{}\n--- workers:\n{}",
                self.coordinator.as_ref().map(Proc::log).unwrap_or_default(),
                self.workers
                    .iter()
                    .map(Proc::log)
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn wait_done(&self, sweep: &str, timeout: Duration) -> serde_json::Value {
        self.wait_for(sweep, "the sweep to complete", timeout, |s| {
            s["state"] == "complete" || s["state"] == "error"
        })
    }

    fn run_dir(&self, sweep: &str) -> PathBuf {
        self.path("state").join("runs").join(sweep)
    }
}

fn sweep_yaml(name: &str, trials: u32, sleep_ms: u32, reports: u32) -> String {
    format!(
        "version: 1\nname: {name}\nkind: random\nseed: 3\nprogram: synthetic\nspace:\n  x: {{ float: [0, 1] }}\n  sleep_ms: {sleep_ms}\n  reports: {reports}\nobjective: {{ metric: loss, goal: minimize }}\nbudget: {{ trials: {trials}, max_attempts: 1 }}\n"
    )
}

/// Every trial of the run recorded exactly once, all finished; returns the workers that
/// ran them.
fn exactly_once(dir: &Path, trials: u64, reports: u64) -> BTreeSet<String> {
    let t = read_table(dir, "trials").unwrap();
    let ids = t.column("trial_id").unwrap().u64().unwrap().clone();
    let status = t.column("status").unwrap().str().unwrap().clone();
    let worker = t.column("worker").unwrap().str().unwrap().clone();
    let mut seen = BTreeSet::new();
    let mut workers = BTreeSet::new();
    for i in 0..t.height() {
        let id = ids.get(i).unwrap();
        assert!(seen.insert(id), "trial {id} recorded twice");
        assert_eq!(status.get(i), Some("finished"), "trial {id}");
        workers.insert(worker.get(i).unwrap().to_owned());
    }
    assert_eq!(seen.len() as u64, trials, "every trial of the budget");
    assert_eq!(seen.iter().copied().max(), Some(trials - 1));
    let m = read_table(dir, "metrics").unwrap();
    assert_eq!(
        m.height() as u64,
        trials * reports * 2,
        "every metric row exactly once (loss and accuracy per report)"
    );
    workers
}

#[test]
fn a_killed_worker_loses_nothing_and_sweeps_share_the_workers() {
    let mut c = Cluster::new();
    c.add_worker("w1", 2);
    c.add_worker("w2", 2);
    let big = c.submit("big", &sweep_yaml("big", 60, 100, 4));
    let small = c.submit("small", &sweep_yaml("small", 8, 100, 4));
    // Fair share: the small sweep, submitted second, is not queued behind the big one.
    let s = c.wait_done(&small, Duration::from_secs(60));
    let big_status = c.status(&big);
    assert_eq!(s["sweeps"][0]["finished"], 8, "{s}");
    assert_ne!(
        big_status["sweeps"][0]["state"], "complete",
        "the second sweep finished only after the first: {big_status}"
    );
    // Kill w1 with trials running; a fresh worker joins and the sweep completes.
    c.wait_for(&big, "some progress", Duration::from_secs(60), |s| {
        s["finished"].as_u64().unwrap_or(0) >= 10
    });
    c.workers[0].kill();
    let killed = Instant::now();
    while !c
        .coordinator
        .as_ref()
        .unwrap()
        .log()
        .contains("worker lost (its connection closed)")
    {
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "the kill was not noticed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "SIGKILLed worker noticed after {:.0} ms",
        killed.elapsed().as_secs_f64() * 1000.0
    );
    c.add_worker("w3", 2);
    let s = c.wait_done(&big, Duration::from_secs(120));
    assert_eq!(s["sweeps"][0]["state"], "complete", "{s}");
    assert_eq!(s["sweeps"][0]["finished"], 60, "{s}");
    let workers = exactly_once(&c.run_dir(&big), 60, 4);
    assert!(workers.contains("w3"), "{workers:?}");
    exactly_once(&c.run_dir(&small), 8, 4);
    let log = c.coordinator.as_ref().unwrap().log();
    assert!(log.contains("worker lost"), "{log}");

    // The status lists the workers that are left, and a report comes from the coordinator.
    let all = c.status("big");
    let names: Vec<&str> = all["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"w2") && names.contains(&"w3") && !names.contains(&"w1"),
        "{all}"
    );
    let (code, out, err) = c.client(&["report", "big", "--top", "3"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("trial") && out.contains("loss"), "{out}");
    let (code, out, _) = c.client(&["status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains(&big) && out.contains("w2"), "{out}");
}

#[test]
fn a_stuck_worker_is_given_up_and_its_late_results_are_not_recorded_twice() {
    let mut c = Cluster::new();
    c.add_worker("steady", 2);
    let stuck = c.add_worker("stuck", 2);
    let id = c.submit("s", &sweep_yaml("s", 30, 100, 3));
    c.wait_for(&id, "some progress", Duration::from_secs(60), |s| {
        s["finished"].as_u64().unwrap_or(0) >= 4
    });
    // Freeze the process: its connection stays open, only heartbeats stop.
    c.workers[stuck].signal("STOP");
    let log_has = |c: &Cluster, what: &str, timeout: Duration| {
        let start = Instant::now();
        while !c.coordinator.as_ref().unwrap().log().contains(what) {
            assert!(
                start.elapsed() < timeout,
                "no `{what}` in the coordinator log"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    log_has(&c, "missed heartbeats", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(1));
    // Thaw it: it rejoins, and what it finished meanwhile is recognised as late.
    c.workers[stuck].signal("CONT");
    let s = c.wait_done(&id, Duration::from_secs(120));
    assert_eq!(s["sweeps"][0]["finished"], 30, "{s}");
    exactly_once(&c.run_dir(&id), 30, 3);
    log_has(&c, "asking it to rejoin", Duration::from_secs(20));
}

#[test]
fn a_killed_coordinator_restarts_and_the_sweep_completes_exactly_once() {
    let mut c = Cluster::new();
    c.add_worker("a", 2);
    c.add_worker("b", 2);
    let id = c.submit("r", &sweep_yaml("r", 40, 60, 3));
    c.wait_for(&id, "some progress", Duration::from_secs(60), |s| {
        s["finished"].as_u64().unwrap_or(0) >= 8
    });
    c.coordinator.as_mut().unwrap().kill();
    std::thread::sleep(Duration::from_millis(500));
    c.start_coordinator();
    let s = c.wait_done(&id, Duration::from_secs(120));
    assert_eq!(s["sweeps"][0]["finished"], 40, "{s}");
    exactly_once(&c.run_dir(&id), 40, 3);
    // The workers reconnected by themselves.
    for w in &c.workers {
        assert!(
            w.log().matches("joined the coordinator").count() >= 2,
            "{}",
            w.log()
        );
    }
    eprintln!(
        "--- restarted coordinator log:\n{}",
        c.coordinator.as_ref().unwrap().log()
    );
}

#[test]
fn nodes_without_the_secret_or_of_another_version_are_refused() {
    let mut c = Cluster::new();
    // Missing secret: a usage error before anything connects.
    let o = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .env_remove("TESSERA_SECRET")
        .args(["worker", "--join", &c.addr])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no cluster secret"));

    // Wrong secret: refused by the coordinator, which logs the refusal.
    let wrong = c.path("wrong-secret");
    std::fs::write(&wrong, "not-the-secret\n").unwrap();
    let mut cmd = c.worker_cmd("intruder", 1);
    cmd.arg("--secret-file").arg(&wrong);
    let mut w = Proc::spawn(cmd, c.path("intruder.log"));
    assert_eq!(w.wait_exit(Duration::from_secs(30)), Some(1), "{}", w.log());
    assert!(w.log().contains("refused this node"), "{}", w.log());
    assert!(
        c.coordinator
            .as_ref()
            .unwrap()
            .log()
            .contains("refused a node"),
        "{}",
        c.coordinator.as_ref().unwrap().log()
    );

    // Another protocol version: refused with a message that says what to do.
    let mut cmd = c.worker_cmd("old", 1);
    cmd.args(["--protocol-version", "999"]);
    let mut w = Proc::spawn(cmd, c.path("old.log"));
    assert_eq!(w.wait_exit(Duration::from_secs(30)), Some(1), "{}", w.log());
    assert!(w.log().contains("same Tessera release"), "{}", w.log());

    // A client with the wrong secret.
    let o = tessera()
        .env("TESSERA_SECRET", "nope")
        .args(["status", "--coordinator", &c.addr])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refused"));

    // The coordinator is unharmed.
    c.add_worker("fine", 1);
    let id = c.submit("ok", &sweep_yaml("ok", 3, 0, 1));
    c.wait_done(&id, Duration::from_secs(60));
    exactly_once(&c.run_dir(&id), 3, 1);

    // A bad sweep file: one located error, exit 2, nothing submitted.
    let bad = c.path("bad.yaml");
    std::fs::write(&bad, "version: 1\nname: b\nkind: grid\nprogram: synthetic\nspace:\n  x: { float: [1, 0] }\nobjective: { metric: loss, goal: minimize }\n").unwrap();
    let (code, _, err) = c.client(&["submit", bad.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bad.yaml:6:"), "{err}");
}

#[test]
fn cancel_stops_a_sweep_and_keeps_what_finished() {
    let mut c = Cluster::new();
    c.add_worker("w", 2);
    let id = c.submit("long", &sweep_yaml("long", 200, 50, 4));
    c.wait_for(&id, "some progress", Duration::from_secs(60), |s| {
        s["finished"].as_u64().unwrap_or(0) >= 3
    });
    let (code, out, err) = c.client(&["cancel", &id]);
    assert_eq!(code, Some(0), "{out}{err}");
    let s = c.wait_for(&id, "the cancel", Duration::from_secs(60), |s| {
        s["state"] == "cancelled"
    });
    let done =
        s["sweeps"][0]["finished"].as_u64().unwrap() + s["sweeps"][0]["stopped"].as_u64().unwrap();
    assert!(done < 200, "{s}");
    let t = read_table(&c.run_dir(&id), "trials").unwrap();
    assert_eq!(t.height() as u64, done);
}

/// Runs `ip ARGS…`, returning whether it worked.
fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A network namespace joined to the host by a veth pair (198.18.N.1 on the host,
/// 198.18.N.2 inside); removed on drop.
struct Netns {
    name: String,
    host_if: String,
}

impl Netns {
    fn create(n: u8) -> Result<Netns, String> {
        let name = format!("tessera-t{n}-{}", std::process::id() % 10_000);
        let host_if = format!("vth{n}-{}", std::process::id() % 10_000);
        let peer_if = format!("vtp{n}-{}", std::process::id() % 10_000);
        let ns = Netns {
            name: name.clone(),
            host_if: host_if.clone(),
        };
        let host_ip = format!("198.18.{n}.1/24");
        let peer_ip = format!("198.18.{n}.2/24");
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &name],
            vec![
                "link", "add", &host_if, "type", "veth", "peer", "name", &peer_if,
            ],
            vec!["link", "set", &peer_if, "netns", &name],
            vec!["addr", "add", &host_ip, "dev", &host_if],
            vec!["link", "set", &host_if, "up"],
            vec!["-n", &name, "addr", "add", &peer_ip, "dev", &peer_if],
            vec!["-n", &name, "link", "set", &peer_if, "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
        ];
        for s in steps {
            if !ip(&s) {
                return Err(format!("`ip {}` failed", s.join(" ")));
            }
        }
        Ok(ns)
    }
}

impl Netns {
    /// Namespace `n`, or `None` (with a loud line) where this user cannot create one;
    /// under CI, where the tests run as root, that is a failure.
    fn or_skip(n: u8) -> Option<Netns> {
        match Netns::create(n) {
            Ok(ns) => Some(ns),
            Err(e) => {
                let msg = format!(
                    "PARTITION TEST NOT RUN: cannot create a network namespace ({e}); run as root (CI does)"
                );
                eprintln!("\n!!!!!!!! {msg} !!!!!!!!\n");
                assert!(std::env::var_os("CI").is_none(), "{msg}");
                None
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        ip(&["link", "del", &self.host_if]);
        ip(&["netns", "del", &self.name]);
    }
}

#[test]
fn a_partitioned_worker_is_detected_by_heartbeats_and_its_late_results_are_ignored() {
    let Some(ns) = Netns::or_skip(7) else {
        return;
    };
    let port = free_port();
    let mut c = Cluster::on(&format!("0.0.0.0:{port}"), &format!("198.18.7.1:{port}"));
    c.add_worker("local", 2);
    // The remote worker runs inside the namespace, across the veth link.
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_tessera")])
        .args([
            "-v", "worker", "--join", &c.addr, "--name", "remote", "--slots", "2",
        ])
        .env("TESSERA_SECRET", SECRET);
    let remote = Proc::spawn(cmd, c.path("worker-remote.log"));
    let id = c.submit("p", &sweep_yaml("p", 40, 100, 3));
    // Wait until the remote worker has finished some trials, then cut the link.
    let start = Instant::now();
    while !remote.log().contains("joined the coordinator")
        || c.status(&id)["sweeps"][0]["finished"].as_u64().unwrap_or(0) < 6
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            remote.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ip(&["link", "set", &ns.host_if, "down"]), "cut the link");
    let cut = Instant::now();
    let coordinator = || c.coordinator.as_ref().unwrap().log();
    while !coordinator().contains("missed heartbeats") {
        assert!(
            cut.elapsed() < Duration::from_secs(30),
            "partition not detected: {}",
            coordinator()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let detected = cut.elapsed();
    eprintln!(
        "partition detected after {:.2} s (heartbeat timeout 2 s)",
        detected.as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(ip(&["link", "set", &ns.host_if, "up"]), "heal the link");
    let s = c.wait_done(&id, Duration::from_secs(180));
    assert_eq!(s["sweeps"][0]["finished"], 40, "{s}");
    let workers = exactly_once(&c.run_dir(&id), 40, 3);
    assert!(
        workers.contains("remote") && workers.contains("local"),
        "{workers:?}"
    );
    let log = coordinator();
    eprintln!(
        "--- coordinator log (partition):\n{log}\n--- remote worker log:\n{}",
        remote.log()
    );
    drop(remote);
}

/// A data-parallel trial cut by a real partition: 3 workers (2 here, 1 in a network
/// namespace) train each trial together (`workers: 3, min_workers: 2`); the namespace's
/// link goes down mid-trial. The coordinator loses the remote worker by its heartbeats
/// and stops the local replicas, which leave their blocked exchange at once; the trial
/// resumes from their checkpoint on the 2 local workers, and every trial is recorded
/// exactly once, also after the link comes back.
#[test]
fn a_data_parallel_trial_cut_by_a_partition_resumes_on_the_workers_left() {
    let Some(ns) = Netns::or_skip(8) else {
        return;
    };
    let port = free_port();
    let (host, inside) = ("198.18.8.1", "198.18.8.2");
    let mut c = Cluster::on(&format!("0.0.0.0:{port}"), &format!("{host}:{port}"));
    // Workers whose ring ports the others reach across the veth link.
    let worker = |c: &Cluster, name: &str, ring_host: &str| {
        let mut cmd = tessera();
        cmd.args(["-v", "worker", "--join", &c.addr, "--name", name])
            .args(["--slots", "1", "--ring-bind", &format!("{ring_host}:0")])
            .env("TESSERA_CACHE_DIR", c.path(&format!("cache-{name}")))
            .env("TESSERA_SECRET", SECRET);
        cmd
    };
    for name in ["w1", "w2"] {
        let cmd = worker(&c, name, host);
        c.workers
            .push(Proc::spawn(cmd, c.path(&format!("worker-{name}.log"))));
    }
    let local = worker(&c, "remote", inside);
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name])
        .arg(local.get_program())
        .args(local.get_args())
        .envs(local.get_envs().filter_map(|(k, v)| Some((k, v?))));
    let remote = Proc::spawn(cmd, c.path("worker-remote.log"));
    let data = digits();
    let yaml = format!(
        "version: 1\nname: dp-cut\nkind: random\nseed: 5\nprogram: mlp-classifier\ndataset: {{ path: {}, shards: 6 }}\nspace:\n  lr: {{ float: [0.003, 0.02], scale: log }}\n  width: 64\n  batch_size: 66\n  epochs: 300\nobjective: {{ metric: val_accuracy, goal: maximize }}\nbudget: {{ trials: 3, max_attempts: 3 }}\nresources: {{ workers: 3, min_workers: 2 }}\n",
        data.display()
    );
    // Every trial starts on all three once they are there.
    let start = Instant::now();
    while c.status_all()["workers"].as_array().map_or(0, Vec::len) < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{}",
            remote.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let submitted = Instant::now();
    let id = c.submit("dp-cut", &yaml);
    c.wait_for(&id, "a first trial", Duration::from_secs(120), |s| {
        s["finished"].as_u64().unwrap_or(0) >= 1
    });
    // A tenth of a trial into the next one (its replicas hold checkpoints), cut the link.
    std::thread::sleep(submitted.elapsed() / 10);
    let busy = c.status(&id)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w["name"] == "remote" && w["free"] == 0);
    assert!(
        busy,
        "the remote worker trains a replica: {}",
        c.status(&id)
    );
    assert!(ip(&["link", "set", &ns.host_if, "down"]), "cut the link");
    let cut = Instant::now();
    let coordinator = || c.coordinator.as_ref().unwrap().log();
    while !coordinator().contains("missed heartbeats") {
        assert!(cut.elapsed() < Duration::from_secs(30), "{}", coordinator());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The local replicas are stopped and free their workers well before the ring's
    // 60 s timeout: the retry runs on them and finishes (90 % of a trial) before the
    // timeout would have let it start.
    c.wait_for(
        &id,
        "the retry on the workers left",
        Duration::from_secs(50),
        |s| s["finished"].as_u64().unwrap_or(0) >= 2,
    );
    let resumed_after = cut.elapsed();
    assert!(resumed_after < Duration::from_secs(50), "{resumed_after:?}");
    assert!(ip(&["link", "set", &ns.host_if, "up"]), "heal the link");
    let s = c.wait_done(&id, Duration::from_secs(300));
    assert_eq!(s["sweeps"][0]["state"], "complete", "{s}");
    assert_eq!(s["sweeps"][0]["finished"], 3, "{s}");
    let dir = c.run_dir(&id);
    let t = read_table(&dir, "trials").unwrap();
    let ids = t.column("trial_id").unwrap().u64().unwrap().clone();
    let seen: BTreeSet<u64> = (0..t.height()).map(|i| ids.get(i).unwrap()).collect();
    assert_eq!((seen.len(), t.height()), (3, 3), "each trial once");
    // The cut trial resumed from a checkpoint on the two local workers.
    let (rows, r) = replica_rows(&dir);
    let resumed: Vec<&(u64, String, i64)> = rows.iter().filter(|row| row.2 > 0).collect();
    assert_eq!(resumed.len(), 2, "{r}");
    assert!(resumed.iter().all(|row| row.1 != "remote"), "{r}");
    eprintln!(
        "partition: the cut trial finished {:.1} s after the cut; replicas:\n{r}",
        resumed_after.as_secs_f64()
    );
    drop(remote);
}

#[test]
fn sixteen_workers_run_ten_thousand_trials_exactly_once() {
    const TRIALS: u64 = 10_000;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut c = Cluster::with(&addr, &addr, &[]);
    for i in 0..16 {
        c.add_worker(&format!("n{i:02}"), 1);
    }
    let start = Instant::now();
    while c.status_all()["workers"].as_array().map_or(0, Vec::len) < 16 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "workers did not join"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let yaml = format!(
        "version: 1\nname: noop\nkind: random\nseed: 1\nprogram: synthetic\nspace:\n  x: {{ float: [0, 1] }}\nobjective: {{ metric: loss, goal: minimize }}\nbudget: {{ trials: {TRIALS}, max_attempts: 1 }}\n"
    );
    let submitted = Instant::now();
    let id = c.submit("noop", &yaml);
    let s = c.wait_done(&id, Duration::from_secs(600));
    let elapsed = submitted.elapsed().as_secs_f64();
    assert_eq!(s["sweeps"][0]["finished"], TRIALS, "{s}");
    let workers = exactly_once(&c.run_dir(&id), TRIALS, 1);
    eprintln!(
        "cluster throughput: {TRIALS} no-op trials through 16 worker processes in {elapsed:.2} s = {:.0} trials/s end to end (submit to complete, {} workers used)",
        TRIALS as f64 / elapsed,
        workers.len()
    );
}

#[test]
fn malformed_messages_from_an_authenticated_peer_do_not_hurt_the_coordinator() {
    use tessera_orchestrator::cluster::node::{Node, wait_for_member};
    use tessera_orchestrator::cluster::wire::COORDINATOR_GROUP;
    let mut c = Cluster::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = Node::start(
            "probe",
            "127.0.0.1:0".parse().unwrap(),
            SECRET.into(),
            None,
            |_, _, _| {},
        )
        .await
        .unwrap();
        node.connect(&c.addr).await.unwrap();
        let gateway = wait_for_member(COORDINATOR_GROUP, Duration::from_secs(10))
            .await
            .expect("the coordinator's gateway");
        // Raw bytes straight to the gateway: garbage, a valid envelope with a broken
        // message, and a message of an unknown variant.
        let raw: ractor::ActorRef<Vec<u8>> = gateway.into();
        for bytes in [
            b"\xff\xfe garbage".to_vec(),
            br#"{"v":1,"from":"x","msg":{"Heartbeat":{}}}"#.to_vec(),
            br#"{"v":1,"from":"x","msg":{"Explode":[1,2,3]}}"#.to_vec(),
            Vec::new(),
        ] {
            raw.cast(bytes).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let log = c.coordinator.as_ref().unwrap().log();
    assert_eq!(
        log.matches("dropped a malformed message").count(),
        4,
        "{log}"
    );
    // Still serving: a sweep runs to the end.
    c.add_worker("w", 1);
    let id = c.submit("after", &sweep_yaml("after", 3, 0, 1));
    c.wait_done(&id, Duration::from_secs(60));
    exactly_once(&c.run_dir(&id), 3, 1);
}

/// A CA and one certificate it signed (for the name `tessera-coordinator`, usable by
/// servers and clients), made with the openssl command line.
fn make_certs(dir: &Path) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let ext = dir.join("ext.cnf");
    std::fs::write(&ext, "subjectAltName=DNS:tessera-coordinator\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n").unwrap();
    let ok = run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tessera-test-ca",
    ]) && run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        "node.key",
        "-out",
        "node.csr",
        "-subj",
        "/CN=tessera-coordinator",
    ]) && run(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    ok.then(|| {
        (
            dir.join("node.pem"),
            dir.join("node.key"),
            dir.join("ca.pem"),
        )
    })
}

#[test]
fn nodes_talk_over_mutual_tls_and_a_plain_node_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let Some((cert, key, ca)) = make_certs(certs.path()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "openssl is needed for the TLS test"
        );
        eprintln!("\n!!!!!!!! TLS TEST NOT RUN: no openssl command !!!!!!!!\n");
        return;
    };
    let tls = |c: &mut Command| {
        c.env("TESSERA_TLS_CERT", &cert)
            .env("TESSERA_TLS_KEY", &key)
            .env("TESSERA_TLS_CA", &ca);
    };
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut c = Cluster {
        dir: tempfile::tempdir().unwrap(),
        serve_args: vec!["-v".into()],
        addr: addr.clone(),
        listen: addr.clone(),
        coordinator: None,
        workers: Vec::new(),
    };
    let mut serve = tessera();
    serve
        .args(["-v", "serve", "--listen", &addr, "--state"])
        .arg(c.path("state"));
    tls(&mut serve);
    c.coordinator = Some(Proc::spawn(serve, c.path("coordinator.log")));
    let mut w = c.worker_cmd("secure", 2);
    tls(&mut w);
    c.workers.push(Proc::spawn(w, c.path("worker-secure.log")));
    // A client over TLS submits and follows the sweep.
    let file = c.path("tls.yaml");
    std::fs::write(&file, sweep_yaml("tls", 6, 0, 2)).unwrap();
    let ask = |args: &[&str]| {
        let mut cmd = tessera();
        cmd.args(args).args(["--coordinator", &addr]);
        tls(&mut cmd);
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let start = Instant::now();
    let submitted = loop {
        let mut cmd = tessera();
        cmd.args(["submit", file.to_str().unwrap(), "--coordinator", &addr]);
        tls(&mut cmd);
        let o = cmd.output().unwrap();
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).into_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let id = submitted.split_whitespace().nth(1).unwrap().to_owned();
    loop {
        let s: serde_json::Value = serde_json::from_str(&ask(&["status", &id, "--json"])).unwrap();
        if s["sweeps"][0]["state"] == "complete" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    exactly_once(&c.run_dir(&id), 6, 2);
    // Without TLS, a node cannot even authenticate.
    let (code, _, err) = c.client(&["status"]);
    assert_eq!(code, Some(1), "{err}");
}

/// A fractal sweep on worker nodes: each tile's 4,096 values cross the network with the
/// attempt's end, and the coordinator writes the raster, the images and the dimension.
#[test]
fn a_fractal_sweep_runs_on_worker_nodes_and_the_coordinator_writes_its_raster() {
    let mut c = Cluster::new();
    c.add_worker("w1", 1);
    c.add_worker("w2", 1);
    let yaml = "version: 1\nname: fractal-cluster\nkind: fractal\nseed: 1\nfractal:\n  n: 8\n  width: 8\n  steps: 30\n  window: { x: [-1, 3], y: [-1, 3] }\n  resolution: 128\n  tile: 64\n  zoom: { frames: 2 }\n";
    let id = c.submit("fractal-cluster", yaml);
    let s = c.wait_done(&id, Duration::from_secs(180));
    assert_eq!(s["sweeps"][0]["finished"], 8, "{s}");
    let dir = c.run_dir(&id);
    let raster = read_table(&dir, "raster").unwrap();
    assert_eq!(
        raster.height(),
        2 * 128 * 128,
        "both frames, every point once"
    );
    let t = read_table(&dir, "trials").unwrap();
    let ids: BTreeSet<u64> = t
        .column("trial_id")
        .unwrap()
        .u64()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(ids, (0..8).collect(), "every tile once");
    let w = t.column("worker").unwrap().str().unwrap().clone();
    let workers: BTreeSet<String> = (0..t.height())
        .filter_map(|i| w.get(i).map(str::to_owned))
        .collect();
    assert_eq!(
        workers.len(),
        2,
        "tiles spread over both workers: {workers:?}"
    );
    assert!(dir.join("fractal/summary.json").is_file());
    assert!(dir.join("fractal/frame-1.png").is_file());
    let (code, out, err) = c.client(&["report", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("fractal boundary"), "{out}");
}

/// A nas sweep on worker nodes: the super-network's weights come back with the training
/// trial's end and go out again with every evaluation trial, and the shards' counts
/// from both nodes add up to each sub-network's accuracy.
#[test]
fn a_nas_sweep_runs_on_worker_nodes_with_the_supernet_shipped_to_them() {
    let mut c = Cluster::new();
    c.add_worker("w1", 1);
    c.add_worker("w2", 1);
    let data = digits();
    let yaml = format!(
        "version: 1\nname: nas-cluster\nkind: nas\nseed: 2\ndataset: {{ path: {} }}\nnas:\n  supernet: {{ family: mlp, depth: [1, 2], width: [16, 32, 64] }}\n  training: {{ epochs: 2 }}\n  objectives:\n    - {{ metric: accuracy, goal: maximize }}\n    - {{ metric: latency_ms, goal: minimize }}\n  population: 6\n  evaluations: 12\n  shards: 2\n  batch: 3\n  predictor_generations: 5\n",
        data.display()
    );
    let id = c.submit("nas-cluster", &yaml);
    let s = c.wait_done(&id, Duration::from_secs(180));
    // 1 + 2 generations × 2 batches × 2 shards.
    assert_eq!(s["sweeps"][0]["finished"], 9, "{s}");
    let dir = c.run_dir(&id);
    let t = read_table(&dir, "trials").unwrap();
    let w = t.column("worker").unwrap().str().unwrap().clone();
    let workers: BTreeSet<String> = (0..t.height())
        .filter_map(|i| w.get(i).map(str::to_owned))
        .collect();
    assert_eq!(workers.len(), 2, "trials on both nodes: {workers:?}");
    assert_eq!(read_table(&dir, "evaluations").unwrap().height(), 24);
    assert_eq!(read_table(&dir, "subnets").unwrap().height(), 12);
    assert!(dir.join("nas/front.png").is_file());
    let (code, out, err) = c.client(&["report", &id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("Pareto front ("), "{out}");
}

/// Data-parallel trials across worker processes: each trial trains on 2 of the 3
/// workers at once over their ring; a SIGKILLed worker's trial runs again on the two
/// that are left (a replacement for the dead one is free), resuming from its checkpoint,
/// and every trial is recorded exactly once.
#[test]
fn data_parallel_trials_train_across_worker_processes_and_survive_a_killed_replica() {
    data_parallel_with_a_killed_worker(2, None);
}

/// An elastic data-parallel sweep (`workers: 3, min_workers: 2`) on exactly 3 workers:
/// when one is killed there is no replacement, and the trial continues from its
/// checkpoint on the 2 that are left (as do the trials after it) instead of waiting.
#[test]
fn an_elastic_data_parallel_trial_continues_on_the_workers_that_are_left() {
    data_parallel_with_a_killed_worker(3, Some(2));
}

/// Every replica of a data-parallel trial lost at once (both its workers SIGKILLed): the
/// retry lands on the two other workers, which hold no checkpoint, and resumes from the
/// copy replica 0 kept beside the sweep's results.
#[test]
fn a_data_parallel_trial_whose_workers_all_die_resumes_from_the_results() {
    let mut c = Cluster::new();
    for w in ["w1", "w2", "w3", "w4"] {
        c.add_worker(w, 1);
    }
    let data = digits();
    let yaml = format!(
        "version: 1\nname: dp-all-lost\nkind: random\nseed: 6\nprogram: mlp-classifier\ndataset: {{ path: {}, shards: 4 }}\nspace:\n  lr: {{ float: [0.003, 0.02], scale: log }}\n  width: 64\n  batch_size: 64\n  epochs: 300\nobjective: {{ metric: val_accuracy, goal: maximize }}\nbudget: {{ trials: 2, concurrent: 1, max_attempts: 3 }}\nresources: {{ workers: 2 }}\n",
        data.display()
    );
    let submitted = Instant::now();
    let id = c.submit("dp-all-lost", &yaml);
    c.wait_for(&id, "a first trial", Duration::from_secs(120), |s| {
        s["finished"].as_u64().unwrap_or(0) >= 1
    });
    // A tenth of a trial into the second one, kill both of its workers.
    std::thread::sleep(submitted.elapsed() / 10);
    let busy: Vec<String> = c.status(&id)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["free"] == 0)
        .map(|w| w["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(busy.len(), 2, "{}", c.status(&id));
    for b in &busy {
        let index = ["w1", "w2", "w3", "w4"]
            .iter()
            .position(|w| w == b)
            .unwrap();
        c.workers[index].kill();
    }
    let s = c.wait_done(&id, Duration::from_secs(300));
    assert_eq!(s["sweeps"][0]["state"], "complete", "{s}");
    assert_eq!(s["sweeps"][0]["finished"], 2, "{s}");
    let dir = c.run_dir(&id);
    let (rows, r) = replica_rows(&dir);
    let resumed: Vec<&(u64, String, i64)> = rows.iter().filter(|row| row.2 > 0).collect();
    assert_eq!(resumed.len(), 2, "{r}");
    assert!(resumed.iter().all(|row| !busy.contains(&row.1)), "{r}");
    // The copy is removed once the trial is recorded (a temporary file of a copy cut
    // short by the kill may stay; it is never read).
    let left = std::fs::read_dir(dir.join("checkpoints"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "ckpt"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(left, 0);
    eprintln!("all replicas lost: resumed from the results' copy\n{r}");
}

/// Runs 4 data-parallel trials of `k` replicas on 3 worker processes and SIGKILLs a
/// worker in the middle of one; checks what the trials and replicas tables say.
fn data_parallel_with_a_killed_worker(k: usize, min_workers: Option<usize>) {
    let mut c = Cluster::new();
    for w in ["w1", "w2", "w3"] {
        c.add_worker(w, 1);
    }
    let data = digits();
    let min = min_workers.map_or(String::new(), |m| format!(", min_workers: {m}"));
    let yaml = format!(
        "version: 1\nname: dp-cluster\nkind: random\nseed: 4\nprogram: mlp-classifier\ndataset: {{ path: {}, shards: 6 }}\nspace:\n  lr: {{ float: [0.003, 0.02], scale: log }}\n  width: 64\n  batch_size: 66\n  epochs: 200\nobjective: {{ metric: val_accuracy, goal: maximize }}\nbudget: {{ trials: 4, max_attempts: 3 }}\nresources: {{ workers: {k}{min} }}\n",
        data.display()
    );
    let submitted = std::time::Instant::now();
    let id = c.submit("dp-cluster", &yaml);
    c.wait_for(&id, "a first trial", Duration::from_secs(120), |s| {
        s["finished"].as_u64().unwrap_or(0) >= 1
    });
    // A trial took at most this long; let the next one run for a tenth of it (about
    // twenty of its 200 epochs) so its replicas have checkpoints to resume from, then
    // kill a worker that is still training a replica.
    let settle = submitted.elapsed() / 10;
    let busy_worker = |c: &Cluster| {
        c.status(&id)["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|w| (w["free"] == 0).then(|| w["name"].as_str().unwrap().to_owned()))
    };
    let busy = loop {
        if let Some(b) = busy_worker(&c) {
            std::thread::sleep(settle);
            if busy_worker(&c).as_ref() == Some(&b) {
                break b;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let index = ["w1", "w2", "w3"].iter().position(|w| *w == busy).unwrap();
    c.workers[index].kill();
    let s = c.wait_done(&id, Duration::from_secs(300));
    assert_eq!(s["sweeps"][0]["state"], "complete", "{s}");
    assert_eq!(s["sweeps"][0]["finished"], 4, "{s}");
    let dir = c.run_dir(&id);
    let t = read_table(&dir, "trials").unwrap();
    let ids = t.column("trial_id").unwrap().u64().unwrap().clone();
    let acc = t.column("val_accuracy").unwrap().f64().unwrap().clone();
    let mut seen = BTreeSet::new();
    for i in 0..t.height() {
        assert!(seen.insert(ids.get(i).unwrap()), "a trial recorded twice");
        assert!(acc.get(i).unwrap() > 0.9, "trial {i}: {:?}", acc.get(i));
    }
    assert_eq!(seen.len(), 4);
    // Each trial's replicas ran on distinct worker processes: K of them, or (elastic)
    // the K - 1 left once one was killed.
    let (rows, r) = replica_rows(&dir);
    let mut by_trial: std::collections::BTreeMap<u64, (BTreeSet<String>, Vec<i64>)> =
        Default::default();
    for (id, worker, from) in rows {
        let e = by_trial.entry(id).or_default();
        assert!(e.0.insert(worker), "{r}");
        e.1.push(from);
    }
    assert_eq!(by_trial.len(), 4, "{r}");
    let sizes: Vec<usize> = by_trial.values().map(|(w, _)| w.len()).collect();
    match min_workers {
        None => assert!(sizes.iter().all(|n| *n == k), "{sizes:?}"),
        Some(_) => assert!(
            sizes.iter().all(|n| *n == k || *n == k - 1) && sizes.contains(&(k - 1)),
            "{sizes:?}"
        ),
    }
    // The killed replica's attempt ran again (as a lost attempt, or as a failed one when
    // a surviving replica noticed first), resuming from the checkpoint the survivors kept
    // rather than from the first epoch: all its replicas say so.
    let resumed: Vec<&(BTreeSet<String>, Vec<i64>)> = by_trial
        .values()
        .filter(|(_, from)| from.iter().any(|e| *e > 0))
        .collect();
    assert_eq!(resumed.len(), 1, "{r}");
    let (workers, from) = resumed[0];
    assert!(
        from.iter().all(|e| *e == from[0]) && from[0] < 200,
        "{from:?}"
    );
    assert!(!workers.contains(&busy), "{r}");
    assert_eq!(workers.len(), if min_workers.is_some() { k - 1 } else { k });
}

/// The digits dataset the data-parallel tests train on.
fn digits() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../experiments/data/digits/digits.parquet")
}

/// The `replicas` table of the run in `dir`: its rows as (trial, worker, epoch resumed
/// from), and the table printed, for messages.
fn replica_rows(dir: &Path) -> (Vec<(u64, String, i64)>, String) {
    let r = read_table(dir, "replicas").unwrap();
    let col = |name: &str| r.column(name).unwrap().clone();
    let (id, worker, from) = (col("trial_id"), col("worker"), col("resumed_from_epoch"));
    let (id, worker, from) = (
        id.u64().unwrap(),
        worker.str().unwrap(),
        from.i64().unwrap(),
    );
    let rows = (0..r.height())
        .map(|i| {
            (
                id.get(i).unwrap(),
                worker.get(i).unwrap().to_owned(),
                from.get(i).unwrap(),
            )
        })
        .collect();
    (rows, r.to_string())
}

/// `(status code, body)` of `GET path` on a local port.
fn http_status(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

/// The probes a Kubernetes deployment uses reflect real health: a worker is ready only
/// while a coordinator has welcomed it, is not ready (but alive) while its coordinator
/// is gone, and ready again when it comes back; the coordinator is ready once it listens.
#[test]
fn readiness_probes_follow_the_coordinator_connection() {
    let (coord_metrics, worker_metrics) = (free_port(), free_port());
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let coord_flag = format!("127.0.0.1:{coord_metrics}");
    let mut c = Cluster::with(&addr, &addr, &["-v", "--metrics-addr", &coord_flag]);
    let wait = |port: u16, path: &str, code: u16| {
        let start = Instant::now();
        loop {
            let got = http_status(port, path);
            if got.as_ref().is_some_and(|(c, _)| *c == code) {
                return got.unwrap().1;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{path} on {port} never answered {code}: {got:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait(coord_metrics, "/readyz", 200);
    let mut w = c.worker_cmd("probe", 1);
    w.args(["--metrics-addr", &format!("127.0.0.1:{worker_metrics}")]);
    c.workers.push(Proc::spawn(w, c.path("worker-probe.log")));
    assert_eq!(wait(worker_metrics, "/readyz", 200), "ready\n");
    c.coordinator.as_mut().unwrap().kill();
    let why = wait(worker_metrics, "/readyz", 503);
    assert!(why.contains("coordinator"), "{why}");
    assert_eq!(
        wait(worker_metrics, "/healthz", 200),
        "ok\n",
        "alive while not ready"
    );
    c.start_coordinator();
    wait(worker_metrics, "/readyz", 200);
    wait(coord_metrics, "/readyz", 200);
}

/// Kubernetes stops a pod with SIGTERM: the worker tells the coordinator it leaves and
/// exits 0 at once; its running trials are queued again, run on the other worker, and
/// every trial is recorded exactly once.
#[test]
fn a_worker_stopped_with_sigterm_hands_its_trials_back() {
    let mut c = Cluster::new();
    c.add_worker("stays", 2);
    c.add_worker("leaves", 2);
    let id = c.submit("t", &sweep_yaml("t", 30, 150, 3));
    c.wait_for(&id, "some progress", Duration::from_secs(60), |s| {
        s["finished"].as_u64().unwrap_or(0) >= 6
    });
    c.workers[1].signal("TERM");
    assert_eq!(
        c.workers[1].wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        c.workers[1].log()
    );
    let s = c.wait_done(&id, Duration::from_secs(120));
    assert_eq!(s["sweeps"][0]["finished"], 30, "{s}");
    exactly_once(&c.run_dir(&id), 30, 3);
    let log = c.coordinator.as_ref().unwrap().log();
    assert!(log.contains("it left"), "{log}");
}
