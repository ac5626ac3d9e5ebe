//! The cluster protocol: what coordinator, worker nodes and clients send each other as
//! ractor_cluster messages.
//!
//! Every message travels as JSON in a versioned envelope `{"v": N, "msg": …}`. Decoding
//! never panics: bytes that are not a valid message of this version become
//! [`ToCoordinator::Malformed`] (or the `ToWorker`/`ToClient` equivalent), which the
//! receiving actor logs and drops. A peer speaking another version is recognised from the
//! envelope alone and told so.

use std::sync::atomic::{AtomicU32, Ordering};

use ractor::BytesConvertable;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tessera_core::trial::{MetricValues, TrialAssignment, TrialId};

use crate::actors::sweep::AttemptEnd;

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

static SPOKEN: AtomicU32 = AtomicU32::new(PROTOCOL_VERSION);
static INBOX: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the process group this process receives on (written into every envelope, so
/// that even a peer of another version can answer).
pub fn set_inbox(group: String) {
    let _ = INBOX.set(group);
}

/// The version this process writes into envelopes (a hidden flag changes it, for the
/// test that a mismatched peer is refused).
pub fn spoken_version() -> u32 {
    SPOKEN.load(Ordering::Relaxed)
}

/// Pretends to speak another protocol version (tests only).
pub fn speak_version(v: u32) {
    SPOKEN.store(v, Ordering::Relaxed);
}

/// The process group the coordinator's gateway joins; nodes find it there.
pub const COORDINATOR_GROUP: &str = "tessera.coordinator";

/// The process group of a worker node's agent.
pub fn worker_group(name: &str) -> String {
    format!("tessera.worker.{name}")
}

/// The process group of a client's reply inbox.
pub fn client_group(id: &str) -> String {
    format!("tessera.client.{id}")
}

/// What a worker node offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Its name (unique in the cluster; the `worker` column of the results).
    pub name: String,
    /// Trials it runs at once.
    pub slots: u32,
    /// GPU indices it may use.
    pub gpus: Vec<u32>,
    /// The training backend (`flex`, `tch`, …).
    pub backend: String,
    /// Memory of its machine, bytes.
    pub memory_bytes: u64,
    /// Programs it can run.
    pub programs: Vec<String>,
    /// Random per process: a restarted worker of the same name is another instance.
    pub instance: u64,
    /// Where its replicas of data-parallel trials meet their ring (`HOST:PORT`); none:
    /// it runs only single-worker trials.
    #[serde(default)]
    pub ring: Option<String>,
}

/// A dispatch a worker is running (sent when it (re)joins).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningLease {
    /// The sweep.
    pub sweep_id: String,
    /// Trial.
    pub trial_id: TrialId,
    /// Attempt.
    pub attempt: u32,
    /// The dispatch.
    pub lease: u64,
    /// Slots it holds.
    pub slots: u32,
    /// GPUs it holds.
    pub gpus: u32,
}

/// How an attempt ended, as sent by a worker node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ended {
    /// The sweep.
    pub sweep_id: String,
    /// The outcome, as the sweep takes it.
    pub end: AttemptEnd,
}

/// Messages to the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToCoordinator {
    /// A worker node joins (or rejoins, with what it still runs and what ended while it
    /// was cut off).
    Hello {
        /// What it offers.
        info: WorkerInfo,
        /// Dispatches still running.
        running: Vec<RunningLease>,
        /// Attempts that ended while no coordinator heard.
        ended: Vec<Ended>,
    },
    /// A worker node is alive.
    Heartbeat {
        /// Its name.
        worker: String,
    },
    /// A report that waits for an early-stopping decision.
    Report {
        /// Worker.
        worker: String,
        /// The sweep.
        sweep_id: String,
        /// Trial.
        trial_id: TrialId,
        /// The dispatch.
        lease: u64,
        /// Step.
        step: u64,
        /// Values.
        metrics: MetricValues,
    },
    /// An attempt ended.
    Ended {
        /// Worker.
        worker: String,
        /// The outcome.
        ended: Ended,
    },
    /// A dispatch's thread is done: its slots are free.
    Freed {
        /// Worker.
        worker: String,
        /// The dispatch.
        lease: u64,
    },
    /// A worker node leaves on purpose.
    Goodbye {
        /// Its name.
        worker: String,
    },
    /// A client's request; the answer goes to the process group `reply_to`.
    Request {
        /// The client's inbox group.
        reply_to: String,
        /// What it asks.
        request: Request,
    },
    /// Bytes that did not decode (never sent; made by the receiver).
    #[serde(skip)]
    Malformed(String),
    /// A peer speaking another protocol version, and its inbox group (never sent; made
    /// by the receiver).
    #[serde(skip)]
    Incompatible(u32, String),
    /// Local: time to check heartbeats.
    #[serde(skip)]
    Tick,
    /// Local: a node's session closed.
    #[serde(skip)]
    NodeDown(String),
    /// Local: a worker's hello, once its agent is reachable.
    #[serde(skip)]
    #[allow(clippy::type_complexity)]
    Joined(
        Box<(WorkerInfo, Vec<RunningLease>, Vec<Ended>)>,
        ractor::ActorCell,
    ),
    /// Local: a sweep ended (summary or error).
    #[serde(skip)]
    SweepDone(String, Result<String, String>),
}

/// A client's request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Run a sweep.
    Submit {
        /// The sweep file's name, for error messages.
        file: String,
        /// Its text.
        source: String,
        /// Its folder, absolute, on the client's machine (relative dataset paths
        /// start there).
        base_dir: String,
    },
    /// Sweeps and workers; one sweep if given.
    Status {
        /// A sweep id or name.
        sweep: Option<String>,
        /// JSON instead of tables.
        json: bool,
    },
    /// Cancel a sweep.
    Cancel {
        /// A sweep id or name.
        sweep: String,
    },
    /// A sweep's report as text.
    Report {
        /// A sweep id or name.
        sweep: String,
        /// Rows in the leaderboard.
        top: usize,
        /// Output format.
        #[serde(default)]
        format: crate::report::Format,
    },
}

/// Messages to a worker node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToWorker {
    /// The coordinator accepted the node.
    Welcome {
        /// Seconds between heartbeats.
        heartbeat_s: f64,
        /// Dispatches it runs that the coordinator no longer wants (drop them).
        drop: Vec<u64>,
    },
    /// The coordinator refused the node.
    Refused {
        /// Why, and what to do.
        reason: String,
    },
    /// The coordinator does not know this node (it restarted, or gave the node up):
    /// send `Hello` again.
    Rejoin,
    /// Run an attempt.
    Run {
        /// Its sweep.
        sweep_id: String,
        /// The attempt.
        assignment: TrialAssignment,
        /// Slots it occupies.
        slots: u32,
        /// GPUs it occupies.
        gpus: u32,
    },
    /// The early-stopping decision for a report.
    Decision {
        /// The dispatch.
        lease: u64,
        /// Step it answers.
        step: u64,
        /// Stop or go on.
        stop: bool,
    },
    /// Stop a running attempt at its next report.
    Cancel {
        /// The dispatch.
        lease: u64,
    },
    /// Bytes that did not decode (never sent).
    #[serde(skip)]
    Malformed(String),
    /// A peer speaking another protocol version (never sent).
    #[serde(skip)]
    Incompatible(u32, String),
    /// Local: time to send a heartbeat.
    #[serde(skip)]
    Tick,
    /// Local: connected to a coordinator; say hello.
    #[serde(skip)]
    Connected,
    /// Local: the coordinator's session closed.
    #[serde(skip)]
    CoordinatorDown,
    /// Local: an attempt's thread ended.
    #[serde(skip)]
    LocalFreed(u64),
    /// Local: an attempt ended.
    #[serde(skip)]
    LocalEnded(Box<Ended>),
}

/// The coordinator's answer to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ToClient {
    /// The answer: text to print, or an error (with the exit code to use).
    Answer(Result<String, (i32, String)>),
    /// Bytes that did not decode (never sent).
    #[serde(skip)]
    Malformed(String),
    /// A peer speaking another protocol version (never sent).
    #[serde(skip)]
    Incompatible(u32, String),
}

#[derive(Serialize)]
struct EnvelopeOut<'a, T> {
    v: u32,
    from: &'a str,
    msg: &'a T,
}

#[derive(Deserialize)]
struct Version {
    v: u32,
    #[serde(default)]
    from: String,
}

#[derive(Deserialize)]
struct EnvelopeIn<T> {
    msg: T,
}

/// Encodes a message in its envelope.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    serde_json::to_vec(&EnvelopeOut {
        v: spoken_version(),
        from: INBOX.get().map_or("", String::as_str),
        msg,
    })
    .unwrap_or_default()
}

/// Decodes an envelope: `Ok(msg)`, `Err(Ok((version, sender)))` for another protocol
/// version, `Err(Err(reason))` for bytes that are not a message.
#[allow(clippy::type_complexity)]
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Result<(u32, String), String>> {
    let Version { v, from } = serde_json::from_slice::<Version>(bytes)
        .map_err(|e| Err(format!("not a Tessera message: {e}")))?;
    if v != spoken_version() {
        return Err(Ok((v, from)));
    }
    serde_json::from_slice::<EnvelopeIn<T>>(bytes)
        .map(|e| e.msg)
        .map_err(|e| Err(format!("malformed protocol-{v} message: {e}")))
}

macro_rules! wire_message {
    ($t:ty) => {
        impl BytesConvertable for $t {
            fn into_bytes(self) -> Vec<u8> {
                encode(&self)
            }
            fn from_bytes(bytes: Vec<u8>) -> Self {
                match decode(&bytes) {
                    Ok(m) => m,
                    Err(Ok((v, from))) => Self::Incompatible(v, from),
                    Err(Err(e)) => Self::Malformed(e),
                }
            }
        }
    };
}

wire_message!(ToCoordinator);
wire_message!(ToWorker);
wire_message!(ToClient);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_never_panics() {
        let m = ToCoordinator::Heartbeat { worker: "w".into() };
        match ToCoordinator::from_bytes(m.into_bytes()) {
            ToCoordinator::Heartbeat { worker } => assert_eq!(worker, "w"),
            other => panic!("{other:?}"),
        }
        for junk in [
            b"".to_vec(),
            b"\xff\x00garbage".to_vec(),
            br#"{"v":1}"#.to_vec(),
            br#"{"v":1,"msg":{"Heartbeat":{}}}"#.to_vec(),
            br#"{"v":"x"}"#.to_vec(),
        ] {
            assert!(matches!(
                ToCoordinator::from_bytes(junk),
                ToCoordinator::Malformed(_)
            ));
        }
        assert!(matches!(
            ToWorker::from_bytes(br#"{"v":99,"msg":"Rejoin"}"#.to_vec()),
            ToWorker::Incompatible(99, _)
        ));
    }
}
