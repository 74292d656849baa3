//! A load balancer in front of server replicas, as a Kubernetes Service
//! is: each connection goes to the next replica in turn, or to another one
//! when that one does not answer (killed, restarting). When none answers
//! the connection is closed and GitLab's delivery fails.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Starts the balancer on 127.0.0.1; returns its address.
pub async fn balance(backends: Vec<SocketAddr>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (backends, next) = (backends.clone(), next.clone());
            tokio::spawn(async move {
                let first = next.fetch_add(1, Ordering::SeqCst);
                for i in 0..backends.len() {
                    let to = backends[(first + i) % backends.len()];
                    if let Ok(mut server) = tokio::net::TcpStream::connect(to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        return;
                    }
                }
            });
        }
    });
    addr
}
