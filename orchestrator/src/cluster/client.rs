//! `tessera submit|status|cancel|report --coordinator ADDR`: a short-lived node that asks
//! the coordinator one thing and prints the answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

use super::ClusterError;
use super::node::{Node, TlsFiles, remote_member};
use super::wire::{self, COORDINATOR_GROUP, Request, ToClient, ToCoordinator};

/// Where to find the coordinator and how to prove membership.
pub struct Connection {
    /// `HOST:PORT` of `tessera serve`.
    pub coordinator: String,
    /// The shared secret.
    pub secret: String,
    /// TLS between nodes.
    pub tls: Option<TlsFiles>,
}

/// A random id for this process's node and inbox.
pub fn random_id() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!(
        "{:016x}",
        tessera_core::rng::mix64(t ^ u64::from(std::process::id()) << 32)
    )
}

/// Joins the cluster as `node_name`, with an inbox in process group `inbox`; returns
/// the node and the coordinator's gateway once it is reachable.
pub async fn join(
    conn: &Connection,
    node_name: &str,
    refused: Arc<AtomicBool>,
    on_down: impl Fn(Option<String>, bool, String) + Send + Sync + 'static,
) -> Result<(Node, ActorRef<ToCoordinator>), ClusterError> {
    let any: SocketAddr = ([0, 0, 0, 0], 0).into();
    let r = refused.clone();
    let node = Node::start(
        node_name,
        any,
        conn.secret.clone(),
        conn.tls.as_ref(),
        move |peer, authenticated, addr| {
            if !authenticated {
                r.store(true, Ordering::Relaxed);
            }
            on_down(peer, authenticated, addr);
        },
    )
    .await?;
    node.connect(&conn.coordinator).await.map_err(|e| {
        ClusterError::Unreachable(format!(
            "{e}; is `tessera serve` running there? (--coordinator or TESSERA_COORDINATOR)"
        ))
    })?;
    // Wait for the coordinator's process group, or for the session to be refused.
    let start = std::time::Instant::now();
    let found = loop {
        if let Some(c) = remote_member(COORDINATOR_GROUP) {
            break Some(c);
        }
        if refused.load(Ordering::Relaxed) || start.elapsed() > Duration::from_secs(10) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    match found {
        Some(c) => Ok((node, ActorRef::from(c))),
        None if refused.load(Ordering::Relaxed) => Err(refusal(&conn.coordinator)),
        None => Err(ClusterError::Unreachable(format!(
            "connected to {} but found no Tessera coordinator there",
            conn.coordinator
        ))),
    }
}

/// The error for a coordinator that closed the session before authentication.
pub fn refusal(addr: &str) -> ClusterError {
    ClusterError::Unreachable(format!(
        "the coordinator at {addr} refused this node: wrong or missing cluster secret (set {} or --secret-file to the coordinator's secret)",
        super::node::SECRET_ENV
    ))
}

struct Inbox;

impl Actor for Inbox {
    type Msg = ToClient;
    type State = mpsc::UnboundedSender<ToClient>;
    type Arguments = mpsc::UnboundedSender<ToClient>;

    async fn pre_start(
        &self,
        _: ActorRef<ToClient>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _: ActorRef<ToClient>,
        msg: ToClient,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = tx.send(msg);
        Ok(())
    }
}

/// Sends one request and waits for the answer: `Ok(text)` or `Err((exit code, message))`.
pub async fn ask(
    conn: &Connection,
    request: Request,
    timeout: Duration,
) -> Result<Result<String, (i32, String)>, ClusterError> {
    let id = random_id();
    let group = wire::client_group(&id);
    wire::set_inbox(group.clone());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (inbox, _) = Actor::spawn(None, Inbox, tx)
        .await
        .map_err(|e| ClusterError::Io(e.to_string()))?;
    ractor::pg::join(group.clone(), vec![inbox.get_cell()]);
    let (_node, gateway) =
        join(conn, &format!("client:{id}"), Arc::default(), |_, _, _| {}).await?;
    gateway
        .cast(ToCoordinator::Request {
            reply_to: group,
            request,
        })
        .map_err(|e| ClusterError::Unreachable(format!("cannot send to the coordinator: {e}")))?;
    let answer = tokio::time::timeout(timeout, rx.recv()).await;
    inbox.stop(None);
    match answer {
        Ok(Some(ToClient::Answer(a))) => Ok(a),
        Ok(Some(ToClient::Incompatible(v, _))) => Err(ClusterError::Unreachable(format!(
            "the coordinator speaks protocol {v}, this client {}; use the same Tessera release",
            wire::PROTOCOL_VERSION
        ))),
        Ok(Some(ToClient::Malformed(e))) => Err(ClusterError::Unreachable(format!(
            "the coordinator's answer did not decode: {e}"
        ))),
        Ok(None) | Err(_) => Err(ClusterError::Unreachable(format!(
            "no answer from the coordinator at {} within {} s",
            conn.coordinator,
            timeout.as_secs()
        ))),
    }
}
