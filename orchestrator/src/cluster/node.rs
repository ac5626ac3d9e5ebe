//! One ractor_cluster node per process: the shared secret, the node server, session
//! events, TLS, and finding peers by process group.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage};

use super::ClusterError;

/// The environment variable that holds the cluster secret.
pub const SECRET_ENV: &str = "TESSERA_SECRET";

/// Reads the shared secret from `file` if given, else from `TESSERA_SECRET`. Never from
/// an argument: `ps` shows arguments to every user of the machine.
pub fn read_secret(file: Option<&Path>) -> Result<String, ClusterError> {
    let secret = match file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| {
                ClusterError::Usage(format!("cannot read the secret file {}: {e}", f.display()))
            })?
            .trim()
            .to_owned(),
        None => std::env::var(SECRET_ENV)
            .unwrap_or_default()
            .trim()
            .to_owned(),
    };
    if secret.is_empty() {
        return Err(ClusterError::Usage(format!(
            "no cluster secret: set {SECRET_ENV} or pass --secret-file FILE (the same on every node; never on the command line, where `ps` shows it)"
        )));
    }
    Ok(secret)
}

/// TLS between nodes: this node's certificate and key, and the CA that signs its
/// peers' certificates (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain of this node.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// The CA every node's certificate is signed by.
    pub ca: PathBuf,
    /// The name the coordinator's certificate is issued for (clients check it).
    pub server_name: String,
}

/// Which node sessions authenticated, and what happens when one closes.
struct Events {
    authenticated: Mutex<HashSet<u64>>,
    on_down: Box<dyn Fn(Option<String>, bool, String) + Send + Sync>,
}

struct Subscription(Arc<Events>);

impl NodeEventSubscription for Subscription {
    fn node_session_opened(&self, _: ractor_cluster::node::NodeServerSessionInformation) {}

    fn node_session_authenticated(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        tracing::debug!(node_id = ses.node_id, peer = ?ses.peer_name.as_ref().map(|n| &n.name), "node session authenticated");
        if let Ok(mut a) = self.0.authenticated.lock() {
            a.insert(ses.node_id);
        }
    }

    fn node_session_disconnected(&self, ses: ractor_cluster::node::NodeServerSessionInformation) {
        let was = self
            .0
            .authenticated
            .lock()
            .map(|mut a| a.remove(&ses.node_id))
            .unwrap_or(false);
        tracing::debug!(node_id = ses.node_id, peer = ?ses.peer_name.as_ref().map(|n| &n.name), authenticated = was, addr = %ses.peer_addr, "node session closed");
        (self.0.on_down)(ses.peer_name.map(|n| n.name), was, ses.peer_addr);
    }
}

/// A running node: its server, and the TLS client settings when TLS is on.
pub struct Node {
    /// The node server actor.
    pub server: ActorRef<NodeServerMessage>,
    tls: Option<(tokio_rustls::TlsConnector, String)>,
}

fn tls_configs(
    t: &TlsFiles,
) -> Result<(tokio_rustls::TlsAcceptor, tokio_rustls::TlsConnector), ClusterError> {
    // Several crypto back ends may be compiled in (other crates pull their own): pick one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, p: &Path, e: &dyn std::fmt::Display| {
        ClusterError::Usage(format!("TLS: cannot read the {what} {}: {e}", p.display()))
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&t.cert)
        .map_err(|e| bad("certificate", &t.cert, &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad("certificate", &t.cert, &e))?;
    let key = PrivateKeyDer::from_pem_file(&t.key).map_err(|e| bad("key", &t.key, &e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(&t.ca).map_err(|e| bad("CA", &t.ca, &e))? {
        roots
            .add(ca.map_err(|e| bad("CA", &t.ca, &e))?)
            .map_err(|e| bad("CA", &t.ca, &e))?;
    }
    let roots = Arc::new(roots);
    let verifier = rustls::server::WebPkiClientVerifier::builder(roots.clone())
        .build()
        .map_err(|e| bad("CA", &t.ca, &e))?;
    let server = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs.clone(), key.clone_key())
        .map_err(|e| bad("certificate", &t.cert, &e))?;
    let client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| bad("certificate", &t.cert, &e))?;
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(server)),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    ))
}

impl Node {
    /// Starts this process's node server as `name`, listening on `listen`, with the
    /// shared `secret` (and TLS if given). `on_down(peer name, was authenticated, peer
    /// address)` runs when a session closes; a session that closes before it
    /// authenticated was refused (wrong or missing secret), and is logged as such.
    pub async fn start(
        name: &str,
        listen: SocketAddr,
        secret: String,
        tls: Option<&TlsFiles>,
        on_down: impl Fn(Option<String>, bool, String) + Send + Sync + 'static,
    ) -> Result<Node, ClusterError> {
        let (mode, connector) = match tls {
            Some(t) => {
                let (acceptor, connector) = tls_configs(t)?;
                (
                    ractor_cluster::IncomingEncryptionMode::Tls(acceptor),
                    Some((connector, t.server_name.clone())),
                )
            }
            None => (ractor_cluster::IncomingEncryptionMode::Raw, None),
        };
        // Bind first, to turn "address in use" into an error rather than a panic.
        drop(std::net::TcpListener::bind(listen).map_err(|e| {
            ClusterError::Usage(format!(
                "cannot listen on {listen}: {e}; choose another --listen"
            ))
        })?);
        let server = NodeServer::new(
            listen.port(),
            secret,
            name.to_owned(),
            hostname(),
            Some(mode),
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(listen.ip());
        let (server, _) = Actor::spawn(None, server, ())
            .await
            .map_err(|e| ClusterError::Io(format!("cannot start the cluster node: {e}")))?;
        let events = Arc::new(Events {
            authenticated: Mutex::new(HashSet::new()),
            on_down: Box::new(on_down),
        });
        server
            .cast(NodeServerMessage::SubscribeToEvents {
                id: "tessera".into(),
                subscription: Box::new(Subscription(events)),
            })
            .map_err(|e| ClusterError::Io(e.to_string()))?;
        Ok(Node {
            server,
            tls: connector,
        })
    }

    /// Opens a session to the node at `addr`.
    pub async fn connect(&self, addr: &str) -> Result<(), ClusterError> {
        let r = match &self.tls {
            None => ractor_cluster::client_connect(&self.server, addr).await,
            Some((connector, name)) => {
                let server_name = rustls::pki_types::ServerName::try_from(name.clone())
                    .map_err(|e| ClusterError::Usage(format!("TLS server name {name}: {e}")))?;
                ractor_cluster::client_connect_enc(
                    &self.server,
                    addr,
                    connector.clone(),
                    server_name,
                )
                .await
            }
        };
        r.map_err(|e| ClusterError::Unreachable(format!("cannot connect to {addr}: {e}")))
    }
}

/// This machine's host name.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// A member of process group `group` on another node, if one is known.
pub fn remote_member(group: &str) -> Option<ActorCell> {
    ractor::pg::get_members(&group.to_owned())
        .into_iter()
        .find(|c| !c.get_id().is_local())
}

/// Waits up to `timeout` for a member of `group` on another node.
pub async fn wait_for_member(group: &str, timeout: Duration) -> Option<ActorCell> {
    let start = Instant::now();
    loop {
        if let Some(c) = remote_member(group) {
            return Some(c);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
